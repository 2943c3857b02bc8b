"""Chat with the tuned model in the console, streaming tokens.

python chat.py                                  # PyTorch, merged model (or base + adapter)
python chat.py --backend onnx                   # an optimized model: onnx or gguf, where the workspace has it
python chat.py --prompt "Hello" [--max-new-tokens 128]   # one answer, then exit

A model trained to call tools gets the tools of the first training example (or of --tools FILE); when it calls
one, you type the result and it answers from it. A model trained on pictures is shown one with --image PATH
(in the first prompt; in the console, `/image PATH` shows it another).
"""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec

from finetune.config import ConfigError, load_config
from finetune.inference import AdapterError, backend_names, load_backend, sampling_options
from finetune.quiet import quiet_libraries


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=backend_names(), default="pytorch")
    parser.add_argument(
        "--model",
        help="model folder, or file for the backend (default: the merged model, or what optimize.py or export_gguf.py made)",
    )
    parser.add_argument(
        "--adapter",
        help="answer with this adapter on its base: a folder train.py wrote (pytorch) or an .onnx_adapter file (onnx)",
    )
    parser.add_argument("--prompt", help="answer this one prompt and exit")
    parser.add_argument("--system", default=None, help="system message")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: generation.max_new_tokens in the config"
    )
    parser.add_argument("--greedy", action="store_true", help="greedy decoding, whatever generation.temperature says")
    parser.add_argument("--config", default="configs/train.yaml")
    calls_tools = find_spec("finetune.tool_calls") is not None  # a workspace for the tools scenario
    sees = find_spec("finetune.images") is not None  # a workspace for conversations about pictures
    if sees:
        parser.add_argument("--image", help="a picture (a file) for the model to answer about")
    if calls_tools:
        parser.add_argument(
            "--tools", help="a JSON file of OpenAI's tools list (default: the first training example's)"
        )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        backend = load_backend(args.backend, args.model, config, {"tuned": args.adapter} if args.adapter else None)
        if calls_tools:
            from finetune.tool_calls import ToolChat

            tools = ToolChat(config, args.tools)
        image = picture(args.image) if sees and args.image else None
    # ValueError: a tools file's DataError or ToolError, a picture that cannot be read
    except (ConfigError, FileNotFoundError, AdapterError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    generation = config.get("generation", {})
    max_new_tokens = args.max_new_tokens or generation.get("max_new_tokens", 256)
    if not args.greedy:
        backend.sampling = sampling_options(generation)
    system = args.system or config["data"].get("system_prompt")
    history = [{"role": "system", "content": system}] if system else []
    while True:
        if args.prompt is not None:
            text = args.prompt
        else:
            try:
                text = input("\nyou> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if text in ("", "/exit", "/quit"):
                return 0
            if sees and text.startswith("/image "):
                try:
                    image = picture(text.removeprefix("/image ").strip())
                except ValueError as error:
                    print(f"error: {error}")
                continue
        if image:  # the picture goes with the next prompt, as an image part beside its text
            history.append(
                {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}
            )
            image = None
        else:
            history.append({"role": "user", "content": text})
        while True:  # answers, and the answers to the results of the tools it calls
            print("model> ", end="", flush=True)
            answer = ""
            for piece in backend.stream(history, max_new_tokens, tools=tools.offered if calls_tools else None):
                answer += piece
                print(piece, end="", flush=True)
            print()
            if answer and not answer.strip():  # else it looks like no answer at all
                print(f"(the answer was {backend.usage[1]} tokens of whitespace only)")
            if not calls_tools:
                history.append({"role": "assistant", "content": answer})
                break
            results = tools.take_turn(answer, history, ask=None if args.prompt is not None else input)
            if not results:
                break
        if args.prompt is not None:
            return 0


def picture(path: str) -> str:
    """The picture's path, once it opens as an image (DataError, a ValueError, names it when it does not)."""
    from finetune.images import open_image

    open_image(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
