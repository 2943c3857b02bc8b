"""Chat with the tuned model in the console, streaming tokens.

    python chat.py                                  # PyTorch, merged model (or base + adapter)
    python chat.py --backend onnx                   # ONNX Runtime GenAI, the optimized model
    python chat.py --prompt "Hello" [--max-new-tokens 128]   # one answer, then exit
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune.config import load_config


def pytorch_chat(model_path: str | None, config: dict):
    from threading import Thread

    import torch
    from transformers import AutoModelForCausalLM, TextIteratorStreamer

    from finetune.modeling import load_tokenizer

    merged = Path(config["merge"]["output_dir"])
    adapter = Path(config["merge"]["adapter_dir"])
    if model_path is None:
        model_path = str(merged if merged.is_dir() else adapter)
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"{model_path} not found: train (python train.py) and merge (python merge.py) first")
    tokenizer = load_tokenizer(model_path)
    if (Path(model_path) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()

    def reply(messages: list[dict], max_new_tokens: int):
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, repetition_penalty=1.1)
        thread = Thread(target=model.generate, kwargs=kwargs)
        thread.start()
        yield from streamer
        thread.join()

    return reply


def onnx_chat(model_path: str | None, adapter: str | None):
    import onnxruntime_genai as og

    if model_path is None:
        found = sorted(Path("outputs/onnx").glob("*/genai_config.json"))
        if not found:
            raise FileNotFoundError("no ONNX model under outputs/onnx/: run python optimize.py first")
        model_path = str(found[0].parent)
    model = og.Model(model_path)
    tokenizer = og.Tokenizer(model)
    adapters = None
    if adapter is None:
        # a base model exported with separate adapters needs one active to run
        adapter = next((str(p) for p in sorted(Path(model_path).glob("*.onnx_adapter"))), None)
    if adapter:
        adapters = og.Adapters(model)
        adapters.load(adapter, "tuned")

    def reply(messages: list[dict], max_new_tokens: int):
        import json

        prompt = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        tokens = tokenizer.encode(prompt)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(tokens) + max_new_tokens, do_sample=False)
        generator = og.Generator(model, params)
        if adapters is not None:
            generator.set_active_adapter(adapters, "tuned")
        generator.append_tokens(tokens)
        stream = tokenizer.create_stream()
        while not generator.is_done():
            generator.generate_next_token()
            yield stream.decode(generator.get_next_tokens()[0])

    return reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["pytorch", "onnx"], default="pytorch")
    parser.add_argument("--model", help="model folder (default: the merged model, or the ONNX model)")
    parser.add_argument("--adapter", help="ONNX backend: an .onnx_adapter file to activate")
    parser.add_argument("--prompt", help="answer this one prompt and exit")
    parser.add_argument("--system", default=None, help="system message")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--config", default="configs/train.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    try:
        reply = onnx_chat(args.model, args.adapter) if args.backend == "onnx" else pytorch_chat(args.model, config)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    system = args.system or config["data"].get("system_prompt")
    history = [{"role": "system", "content": system}] if system else []
    prompts = [args.prompt] if args.prompt else None
    while True:
        if prompts is not None:
            if not prompts:
                return 0
            text = prompts.pop()
        else:
            try:
                text = input("\nyou> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if text in ("", "/exit", "/quit"):
                return 0
        history.append({"role": "user", "content": text})
        print("model> ", end="", flush=True)
        answer = ""
        for piece in reply(history, args.max_new_tokens):
            answer += piece
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": answer})


if __name__ == "__main__":
    sys.exit(main())
