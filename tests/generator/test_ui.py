"""`tuneforge ui`'s server, over HTTP as the page calls it: the questions, the live plan, the CLI's messages beside
each field, nothing written before Create, Create and Update as the CLI does them, and 4xx for what is not the page."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
import yaml

from helpers.project import sets, tuneforge
from helpers.servers import form_server
from tuneforge import catalog
from tuneforge.planning import hardware
from tuneforge.planning.answers import BY_KEY, Given
from tuneforge.planning.questions import HYPER, ORDER
from tuneforge.rendering.render import git
from tuneforge.web.form import Form
from tuneforge.web.server import make_server


def request(port: int, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers={**sent, **(headers or {})})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, (json.loads(payload) if response.getheader("Content-Type") == "application/json" else {})


@pytest.fixture
def new_form(tmp_path):
    def make(dest: Path | None = None) -> Form:
        return Form(dict(hardware.TYPICAL), dest)

    return make


def test_questions_are_the_terminal_forms_in_its_order_with_its_help(new_form):
    with form_server(new_form()) as port:
        status, form = request(port, "GET", "/api/form")
    assert status == 200 and form["mode"] == "new"
    assert [[q["key"] for q in g["questions"]] for g in form["groups"]] == [ORDER, HYPER]
    for question in (q for g in form["groups"] for q in g["questions"]):
        assert question["help"] == BY_KEY[question["key"]].help
    technique = next(q for q in form["groups"][0]["questions"] if q["key"] == "technique")
    assert technique["choices"] == [{"value": k, "title": f["title"]} for k, f in catalog.load("techniques").items()]


def test_a_small_gpu_does_not_fit_and_a_suggestion_does(new_form):
    with form_server(new_form()) as port:
        status, plan = request(
            port, "POST", "/api/plan", {"answers": {"hardware": "cuda", "gpu_memory_gb": "8"}, "files": False}
        )
        assert status == 200
        assert not plan["fits"] and plan["verdict"].startswith("does not fit") and plan["suggestions"]
        parts = plan["memory"]["parts"]
        assert [p["name"] for p in parts] == ["weights", "optimizer and gradients", "activations", "logits", "runtime"]
        assert sum(p["gb"] for p in parts) == pytest.approx(plan["memory"]["total_gb"], abs=0.05)
        assert "gpu_memory_gb" in plan["relevant"] and plan["origins"]["gpu_memory_gb"] == "form"
        taken = {"hardware": "cuda", "gpu_memory_gb": "8", **plan["suggestions"][0]["changes"]}
        status, fitted = request(port, "POST", "/api/plan", {"answers": taken})
    assert status == 200 and fitted["fits"] and fitted["verdict"].startswith("fits")
    assert "train.py" in fitted["files"] and "configs/train.yaml" in fitted["files"]


def test_each_bad_answer_gets_the_clis_message_beside_its_field(new_form, capsys):
    with form_server(new_form()) as port:
        status, plan = request(
            port, "POST", "/api/plan", {"answers": {"lora_r": "x", "targets": "onnx-cpuu", "seed": "7"}}
        )
    assert status == 200
    assert tuneforge("plan", "--set", "lora_r=x") == 2
    assert plan["errors"]["lora_r"] == capsys.readouterr().err.removeprefix("error: ").strip()
    assert "Did you mean 'onnx-cpu'?" in plan["errors"]["targets"]
    assert plan["values"]["seed"] == 7 and plan["values"]["lora_r"] == 32  # planned without the bad ones


def test_what_cannot_work_is_named_at_its_field_and_create_refuses_it(new_form, tmp_path):
    dest = tmp_path / "refused"
    with form_server(new_form(dest)) as port:
        answers = {"hardware": "mps", "technique": "qlora"}
        status, plan = request(port, "POST", "/api/plan", {"answers": answers})
        assert status == 200 and plan["problems"][0]["key"] == "technique" and plan["files"] == []
        status, refused = request(port, "POST", "/api/create", {"answers": answers})
    assert status == 400 and refused["errors"] and "cannot work" in refused["error"]
    assert not dest.exists()


def test_create_writes_what_tuneforge_new_writes_and_nothing_before(new_form, tmp_path):
    answers = {"technique": "dora", "targets": ["pytorch", "gguf"], "lora_r": 8}
    dest = tmp_path / "ui" / "project-x"
    with form_server(new_form()) as port:
        request(port, "POST", "/api/plan", {"answers": answers, "dest": str(dest)})
        assert not dest.parent.exists()  # planning writes nothing
        status, made = request(port, "POST", "/api/create", {"answers": answers, "dest": str(dest)})
        assert status == 200 and made["dest"] == str(dest.resolve())
        status, again = request(port, "POST", "/api/create", {"answers": answers, "dest": str(dest)})
        assert status == 400 and "already a workspace" in again["error"]
        assert request(port, "GET", "/api/form")[1]["mode"] == "update"
    cli = tmp_path / "cli" / "project-x"
    assert tuneforge("new", cli, "--defaults", *sets(answers)) == 0
    read = lambda root: yaml.safe_load((root / ".copier-answers.yml").read_text())
    assert read(dest) == read(cli)
    listed = lambda root: sorted(git(root, "ls-files").split())
    assert listed(dest) == listed(cli)
    assert git(dest, "rev-list", "--count", "HEAD").strip() == "1"


def test_update_previews_the_merge_on_a_copy_then_applies_it_keeping_edits(new_workspace, tmp_path):
    workspace = new_workspace("kept", technique="lora")
    readme = workspace / "README.md"
    readme.write_text(readme.read_text() + "\nMy own notes.\n")
    git(workspace, "commit", "-q", "-am", "my notes")
    head = git(workspace, "rev-parse", "HEAD")
    form = Form.for_workspace(workspace, dict(hardware.TYPICAL), Given())
    with form_server(form) as port:
        status, info = request(port, "GET", "/api/form")
        assert info["mode"] == "update" and info["dest"] == str(workspace)
        status, plan = request(port, "POST", "/api/plan", {"answers": {}})
        assert plan["values"]["technique"] == "lora" and plan["origins"]["technique"] == "previous answers"
        change = {"answers": {"targets": "pytorch,gguf"}}
        status, preview = request(port, "POST", "/api/update/preview", change)
        assert status == 200, preview
        assert "finetune/gguf.py" in preview["changed"] and "olive/onnx-cpu.json" in preview["removed"]
        assert "+++ b/finetune/gguf.py" in preview["diff"]
        assert git(workspace, "rev-parse", "HEAD") == head and not git(workspace, "status", "--porcelain")
        status, done = request(port, "POST", "/api/update", change)
    assert status == 200 and "finetune/gguf.py" in done["changed"] and not done["conflicts"]
    assert (workspace / "finetune" / "gguf.py").is_file() and not (workspace / "olive").exists()
    assert "My own notes." in readme.read_text()


@pytest.mark.parametrize(
    "headers, body, status",
    [
        ({"Content-Type": "text/plain"}, b"{}", 415),
        ({}, b"{not json", 400),
        ({}, b"[1, 2]", 400),
        ({}, {"answers": [1]}, 400),
        ({"Host": "evil.example:80"}, {"answers": {}}, 403),
        ({"Origin": "http://evil.example"}, {"answers": {}}, 403),
    ],
)
def test_requests_that_are_not_the_pages_get_4xx(new_form, headers, body, status):
    with form_server(new_form()) as port:
        got, payload = request(port, "POST", "/api/plan", body, headers)
    assert got == status and payload["error"]


def test_other_routes_and_oversized_bodies(new_form):
    with form_server(new_form()) as port:
        assert request(port, "GET", "/etc/passwd")[0] == 404
        assert request(port, "POST", "/api/nothing", {})[0] == 404
        assert request(port, "POST", "/api/plan", b" " * ((1 << 20) + 1))[0] == 413
        assert request(port, "POST", "/api/update", {"answers": {}})[0] == 400  # no workspace yet
        same_origin = {"Origin": f"http://127.0.0.1:{port}"}
        assert request(port, "POST", "/api/plan", {"answers": {}, "files": False}, same_origin)[0] == 200


def test_listens_on_the_loopback_unless_told(new_form, tmp_path, capsys):
    server = make_server(new_form())
    assert server.server_address[0] == "127.0.0.1"
    server.server_close()
    from tuneforge.cli import build_parser

    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert tuneforge("ui", tmp_path / "full", "--no-browser") == 2
    assert "not empty and not a tuneforge workspace" in capsys.readouterr().err


def test_the_file_list_is_the_render_of_each_plan(new_form):
    """The form renders the file list once per set of file switches: the list must be what rendering that very
    plan gives, also for plans that differ only in values the file names do not read."""
    from tuneforge.rendering.render import render_files

    form = new_form()
    for answers in (
        {"lora_r": 8},
        {"lora_r": 64, "scenario": "classification"},
        {"targets": "pytorch,onnx-cuda"},
        {"targets": "pytorch,gguf"},
        {"targets": "pytorch,gguf", "technique": "full"},
    ):
        plan, errors = form.plan(answers)
        assert not errors and form.files(plan) == render_files(plan.copier_data())


def test_tuneforge_ui_serves_the_page_on_the_loopback_and_prints_where(tmp_path):
    """As a user starts it: the command prints the address, the page and its script load, Ctrl-C ends it."""
    import os
    import signal
    import subprocess
    import sys

    from helpers.project import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT / "generator")}
    # `python -m tuneforge ui ...` as a terminal's foreground runs it: a suite started in the background
    # (`make test &`) hands its children SIGINT ignored, and Python then installs no Ctrl-C handler of its own
    foreground = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    foreground += "runpy.run_module('tuneforge', run_name='__main__', alter_sys=True)"
    server = subprocess.Popen(
        [sys.executable, "-c", foreground, "ui", str(tmp_path / "new-one"), "--no-browser", "--no-detect"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("tuneforge form on http://127.0.0.1:"), line + server.stderr.read()
        port = int(line.split(":")[2].split("/")[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path, kind in (("/", "text/html"), ("/form.js", "text/javascript"), ("/form.css", "text/css")):
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200 and response.getheader("Content-Type").startswith(kind)
            assert "default-src 'self'" in response.getheader("Content-Security-Policy")
            response.read()
        connection.close()
        assert (
            request(port, "POST", "/api/plan", {"answers": {}, "files": False})[1]["values"]["project_name"]
            == "new-one"
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:  # communicate drains both pipes: a server blocked writing to a full pipe cannot exit
            out, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
            raise AssertionError(f"the server did not stop within 60 s of Ctrl-C; it wrote:\n{out}{err}") from None
    assert server.returncode == 0, out + err
    assert "stopped" in err
    assert not (tmp_path / "new-one").exists()
