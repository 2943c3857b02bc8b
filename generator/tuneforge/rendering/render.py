"""The only place that calls copier: new workspaces, regeneration (3-way merge) and dry runs.

copier can only update a project whose template is a tagged git repository, so the template folder
is kept as one in a cache (`~/.cache/tuneforge/template`): each distinct template content becomes one
commit tagged `N+t<digest>`. A workspace records that tag in `.copier-answers.yml`, so a later
tuneforge (with a changed template) can still render the old version and merge the user's edits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge import __version__
from tuneforge.planning.answers import copier_questions

ANSWERS_FILE = ".copier-answers.yml"
CONFLICT_MARKER = "<<<<<<< before updating"
_GIT_ID = [
    "-c",
    "user.name=tuneforge",
    "-c",
    "user.email=tuneforge@localhost",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
]


class RenderError(RuntimeError):
    """Rendering could not be done; nothing was left half-written."""


def template_source() -> Path:
    """The template folder: $TUNEFORGE_TEMPLATE, the copy shipped in the wheel, or the checkout's templates/."""
    if env := os.environ.get("TUNEFORGE_TEMPLATE"):
        return Path(env)
    shipped = Path(__file__).parents[1] / "_template"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[3] / "templates"


def cache_dir() -> Path:
    if env := os.environ.get("TUNEFORGE_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "tuneforge"


def _src_path_text(repo: Path) -> str:
    """How the answers file names the template: with ~ when under the home folder, so it travels."""
    home = Path.home()
    with contextlib.suppress(ValueError):
        return "~/" + repo.relative_to(home).as_posix()
    return repo.as_posix()


def git(cwd: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *_GIT_ID, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RenderError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout


def template_digest(src: Path, questions: str = "") -> str:
    """The template's content (and the questions added to its copier.yml) in 12 hex digits."""
    digest = hashlib.sha256(questions.encode())
    for path in sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Template:
    repo: Path
    tag: str

    @property
    def src_path(self) -> str:
        return _src_path_text(self.repo)


def versioned_template(src: Path | None = None) -> Template:
    """Make sure the cache repository holds the current template content as a tagged commit, its copier.yml with
    the questions planning/answers.py declares."""
    src = src or template_source()
    if not (src / "copier.yml").is_file():
        raise RenderError(f"no copier template at {src}")
    repo = cache_dir() / "template"
    repo.mkdir(parents=True, exist_ok=True)
    questions = copier_questions()
    digest = template_digest(src, questions)
    with open(repo.parent / "template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (repo / ".git").is_dir():
            git(repo, "init", "-q")
        tags = git(repo, "tag", "--list").split()
        for tag in tags:
            if tag.endswith(f"+t{digest}"):
                return Template(repo, tag)
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(src, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with open(repo / "copier.yml", "a", encoding="utf-8") as copier_yml:
            copier_yml.write("\n" + questions)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", f"template from tuneforge {__version__} ({digest})")
        tag = f"{len(tags) + 1}+t{digest}"
        git(repo, "tag", tag)
        return Template(repo, tag)


def has_version(tag: str) -> bool:
    repo = cache_dir() / "template"
    return (repo / ".git").is_dir() and tag in git(repo, "tag", "--list").split()


def _copy(template: Template, dst: Path, data: dict, vcs_ref: str | None = None) -> None:
    import copier  # heavy import, only when rendering

    copier.run_copy(
        str(template.repo),
        dst,
        data=data,
        defaults=True,
        vcs_ref=vcs_ref or template.tag,
        quiet=True,
        overwrite=True,
        unsafe=False,
    )
    _fix_src_path(dst, template)


def _fix_src_path(dst: Path, template: Template) -> None:
    answers = dst / ANSWERS_FILE
    text = answers.read_text(encoding="utf-8")
    answers.write_text(
        text.replace(f"_src_path: {template.repo.as_posix()}\n", f"_src_path: {template.src_path}\n"), encoding="utf-8"
    )


def render_plain(dest: Path, data: dict) -> None:
    """Render the current template into dest as plain files: no git repository, no staging (examples/)."""
    _copy(versioned_template(), dest, data)


def render_files(data: dict) -> list[str]:
    """The files a workspace with these answers would hold (rendered in a scratch folder)."""
    template = versioned_template()
    with tempfile.TemporaryDirectory(prefix="tuneforge-dry-") as scratch:
        _copy(template, Path(scratch) / "ws", data)
        root = Path(scratch) / "ws"
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def render_workspace(dest: Path, data: dict, force: bool = False) -> None:
    """Render a new workspace at dest as a git repository with one commit. All or nothing: on any
    failure or interrupt, dest is put back as it was."""
    dest = dest.resolve()
    if dest.exists() and not dest.is_dir():
        raise RenderError(f"{dest} exists and is not a folder")
    if not is_empty(dest) and not force:
        raise RenderError(f"{dest} is not empty; choose another folder, or pass --force to render into it")
    template = versioned_template()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tuneforge-", dir=dest.parent))
    except OSError as error:
        raise RenderError(
            f"cannot write in {dest.parent}: {error.strerror}; choose a folder you can write to"
        ) from None
    try:
        _copy(template, staging, data)
        if is_empty(dest):
            git(staging, "init", "-q")
            git(staging, "add", "-A")
            git(staging, "commit", "-q", "-m", f"Generated by tuneforge {__version__}")
            if dest.exists():
                dest.rmdir()
            staging.rename(dest)
            return
        _render_into(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _render_into(staging: Path, dest: Path) -> None:
    """Copy a rendered workspace into a folder that already holds files (--force) and commit only
    what the template produced, so the user's own files (an .env, say) are never committed. The
    files it replaces are kept aside until the commit is made, and put back if anything fails."""
    rendered = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    new_repo = not (dest / ".git").exists()
    backup = staging.parent / f"{staging.name}.backup"
    created: list[Path] = []
    replaced: list[Path] = []
    try:
        for rel in rendered:
            target = dest / rel
            if target.is_file() or target.is_symlink():
                (backup / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(target, backup / rel, follow_symlinks=False)
                replaced.append(rel)
            elif target.exists():
                raise RenderError(f"{target} is a folder, but the workspace needs a file there; move it and try again")
            else:
                for parent in reversed(rel.parents[:-1]):
                    if not (dest / parent).exists():
                        created.append(parent)
                created.append(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            shutil.copy2(staging / rel, target)
        if new_repo:
            git(dest, "init", "-q")
        git(dest, "add", "-f", "--", *(rel.as_posix() for rel in rendered))
        git(
            dest,
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            f"Generated by tuneforge {__version__}",
            "--",
            *(rel.as_posix() for rel in rendered),
        )
    except BaseException:
        for rel in replaced:
            shutil.copy2(backup / rel, dest / rel, follow_symlinks=False)
        for rel in reversed(created):
            path = dest / rel
            if path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if new_repo:
            shutil.rmtree(dest / ".git", ignore_errors=True)
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)


def read_workspace_answers(dest: Path) -> dict:
    from tuneforge.planning.answers import AnswerError, load_mapping

    answers = dest / ANSWERS_FILE
    if not answers.is_file():
        raise RenderError(f"{dest} is not a tuneforge workspace: it has no {ANSWERS_FILE}")
    try:
        return load_mapping(answers, ANSWERS_FILE)
    except AnswerError as error:
        raise RenderError(
            f"{error}; tuneforge wrote it and reads it back, so restore it with "
            f"`git checkout -- {ANSWERS_FILE}` (or from your last commit)"
        ) from None


def conflicted_files(dest: Path) -> list[str]:
    """Tracked files that still hold the conflict markers of an earlier update."""
    marked = git(dest, "grep", "-l", "-I", "--untracked", "-F", CONFLICT_MARKER, check=False)
    return [line for line in marked.splitlines() if line]


def is_dirty(dest: Path) -> bool:
    return bool(git(dest, "status", "--porcelain").strip())


@dataclass
class UpdateResult:
    conflicts: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # files of dropped features that the user had edited
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def update_workspace(dest: Path, data: dict, force: bool = False) -> UpdateResult:
    """Regenerate dest with new answers by a 3-way merge; the user's edits survive.

    A dirty workspace is refused unless force, which first commits the user's changes. On failure
    the workspace is put back as it was.
    """
    import copier

    dest = dest.resolve()
    old = read_workspace_answers(dest)
    if not (dest / ".git").exists():
        raise RenderError(
            f"{dest} is not a git repository, so its edits cannot be merged; run `git init` and commit first"
        )
    if conflicts := conflicted_files(dest):
        raise RenderError(
            f"{len(conflicts)} file(s) still hold conflict markers from the last update "
            f"({', '.join(conflicts[:5])}); resolve them (keep one side between <<<<<<< and >>>>>>>), "
            "commit, then update again"
        )
    if is_dirty(dest):
        if not force:
            raise RenderError(
                f"{dest} has uncommitted changes; commit or stash them first (or pass --force to commit them now)"
            )
        git(dest, "add", "-A")
        git(dest, "commit", "-q", "-m", "Your changes before tuneforge update")
    old_tag = old.get("_commit")
    if not old_tag or not has_version(old_tag):
        # the tag may come from this very template (a fresh cache); make sure the current one is there
        versioned_template()
    if not old_tag or not has_version(old_tag):
        raise RenderError(
            f"this workspace was rendered from template version {old_tag!r}, which is not in {cache_dir() / 'template'} "
            "(it was made by another tuneforge install); run the same tuneforge version, or copy its cache here"
        )
    template = versioned_template()
    recorded = Path(str(old.get("_src_path", ""))).expanduser()
    if recorded != template.repo:
        raise RenderError(
            f"this workspace names its template at {old.get('_src_path')}, but this tuneforge keeps it at "
            f"{template.repo}; set TUNEFORGE_CACHE_DIR to {recorded.parent}"
        )
    head = git(dest, "rev-parse", "HEAD").strip()
    pristine_old = _render_old(template, old, old_tag)
    tracked = git(dest, "ls-files", "-z").split("\0")
    edited = {
        p
        for p, content in pristine_old.items()
        if p in tracked and (dest / p).is_file() and (dest / p).read_bytes() != content
    }
    saved = {p: (dest / p).read_bytes() for p in edited}
    try:
        copier.run_update(
            dst_path=dest,
            data=data,
            defaults=True,
            overwrite=True,
            quiet=True,
            vcs_ref=template.tag,
            conflict="inline",
            unsafe=False,
            skip_answered=True,
        )
        _fix_src_path(dest, template)
    except BaseException:
        git(dest, "reset", "-q", "--hard", head, check=False)
        git(dest, "clean", "-q", "-fd", check=False)
        raise
    result = UpdateResult()
    for path, content in saved.items():
        if not (dest / path).exists():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            (dest / path).write_bytes(content)
            result.kept.append(path)
    for line in git(dest, "status", "--porcelain", "-uall").splitlines():
        status, path = line[:2], line[3:]
        if "D" in status:
            result.removed.append(path)
        else:
            result.changed.append(path)
    for path in result.changed:
        file = dest / path
        if file.is_file() and CONFLICT_MARKER.encode() in file.read_bytes():
            result.conflicts.append(path)
    return result


def _render_old(template: Template, old_answers: dict, old_tag: str) -> dict[str, bytes]:
    data = {k: v for k, v in old_answers.items() if not k.startswith("_")}
    with tempfile.TemporaryDirectory(prefix="tuneforge-old-") as scratch:
        root = Path(scratch) / "ws"
        _copy(template, root, data, vcs_ref=old_tag)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
