"""Downloading models from a Hugging Face hub into models/, with progress.

A repository becomes ``models/<owner>_<name>`` (``_<branch>`` added for a branch other
than main); a GGUF repository gives one chosen ``.gguf`` file, put straight into models/.
Files land in a ``<target>.partial`` folder first (the registry skips those) and are
moved into place only when every file has arrived, so a half-finished download never
shows up as a model. Running the same download again resumes in that folder.

The hub is whatever ``HF_ENDPOINT`` names (read when a download starts, so tests can
point it at a local server); ``HF_TOKEN`` works as huggingface_hub documents it.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from modules.core.errors import BadNameError, CorralError

ProgressCallback = Callable[[float, str], None]

DEFAULT_ENDPOINT = "https://huggingface.co"
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
# Weights for other frameworks, and repository bookkeeping: never needed here.
SKIPPED = ("*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.mlmodel", "onnx/*",
           "coreml/*", "openvino/*", "flax_model*", "tf_model*", ".gitattributes")
PYTORCH_WEIGHTS = ("*.bin", "*.pt", "*.pth")


class DownloadError(CorralError):
    """A download could not be started or finished."""


class DownloadCancelled(DownloadError):
    """The user stopped the download; what arrived stays in the .partial folder."""


@dataclass
class RemoteFile:
    name: str
    size: int


@dataclass
class DownloadPlan:
    repo_id: str
    branch: str
    commit: str
    files: list[RemoteFile]
    partial: Path  # where files arrive
    target: Path  # the model folder, or the .gguf file
    endpoint: str

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def is_single_file(self) -> bool:
        return self.target.suffix.lower() == ".gguf"


# --- names ----------------------------------------------------------------------------------------


def parse_repo_id(text: str) -> tuple[str, str | None]:
    """``owner/name`` from what a user pastes: the id, ``owner/name:branch`` or a hub URL.

    Returns (repo_id, branch or None). Anything with ``..``, a leading ``/`` or odd
    characters is refused, so the id can never name a path outside models/.
    """
    cleaned = (text or "").strip()
    if not cleaned:
        raise BadNameError("Type a repository id such as HuggingFaceTB/SmolLM2-135M-Instruct.")
    branch = None
    url = re.match(r"^https?://[^/]+/(.+)$", cleaned)
    if url:
        parts = url.group(1).strip("/").split("/")
        if len(parts) >= 4 and parts[2] in ("tree", "blob", "resolve"):
            branch = parts[3]
        cleaned = "/".join(parts[:2])
    elif ":" in cleaned:
        cleaned, branch = cleaned.split(":", 1)
    parts = cleaned.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) and ".." not in p for p in parts):
        raise BadNameError(f"{text!r} is not a repository id. Use the form owner/name, e.g. "
                           "HuggingFaceTB/SmolLM2-135M-Instruct (letters, digits, '-', '_', '.'; no '..').")
    return cleaned, (check_branch(branch) if branch else None)


def check_branch(branch: str) -> str:
    cleaned = (branch or "").strip()
    if not _BRANCH.match(cleaned) or ".." in cleaned or cleaned.endswith("/"):
        raise BadNameError(f"Branch {branch!r} is not a valid branch name (letters, digits, '-', '_', '.', '/'; no '..').")
    return cleaned


def check_file_name(name: str) -> str:
    """A file inside the repository: relative, no ``..`` parts."""
    cleaned = (name or "").strip()
    parts = cleaned.split("/")
    if not cleaned or cleaned.startswith("/") or "\\" in cleaned or any(p in ("", ".", "..") for p in parts):
        raise BadNameError(f"File {name!r} is not a file name inside the repository (no '..' or leading '/').")
    return cleaned


def folder_name(repo_id: str, branch: str) -> str:
    """``owner_name``, plus ``_branch`` for a branch other than main."""
    name = repo_id.replace("/", "_")
    if branch and branch != "main":
        name += "_" + branch.replace("/", "_")
    return name


# --- choosing files -----------------------------------------------------------------------------


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def choose_files(files: list[RemoteFile], wanted: str | None) -> list[RemoteFile]:
    """The files to fetch: the one asked for, else a model folder's files.

    A repository of GGUF files and no config.json needs a file named: each GGUF is a whole model.
    PyTorch ``.bin`` weights are skipped when safetensors are there (the same weights, twice).
    """
    names = {f.name: f for f in files}
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    if wanted:
        wanted = check_file_name(wanted)
        if wanted not in names:
            listing = ", ".join(ggufs or sorted(names)[:20]) or "none"
            raise DownloadError(f"The repository has no file {wanted!r}. Files there: {listing}.")
        return [names[wanted]]
    if ggufs and "config.json" not in names:
        raise DownloadError(f"This repository holds GGUF files; type the one you want in the File box: "
                            f"{', '.join(ggufs)}.")
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    chosen = [f for f in files if not _matches(f.name, SKIPPED) and not f.name.lower().endswith(".gguf")
              and not (has_safetensors and _matches(f.name, PYTORCH_WEIGHTS))]
    if not chosen:
        raise DownloadError("The repository has no files to download.")
    return chosen


# --- the hub ------------------------------------------------------------------------------------


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def _hub_error(err: Exception, repo_id: str, branch: str, endpoint: str) -> DownloadError:
    """huggingface_hub's exceptions, in words that say what to do."""
    from huggingface_hub import errors

    if isinstance(err, errors.RevisionNotFoundError):
        return DownloadError(f"{repo_id} has no branch {branch!r}. Leave Branch empty for main, or check its name.")
    if isinstance(err, errors.GatedRepoError):
        return DownloadError(f"{repo_id} is gated: accept its terms on the hub, then set HF_TOKEN and try again.")
    if isinstance(err, errors.RepositoryNotFoundError):
        return DownloadError(f"No repository {repo_id} on {endpoint} (or it is private: set HF_TOKEN). Check the id.")
    if isinstance(err, errors.EntryNotFoundError):
        return DownloadError(f"A file of {repo_id} disappeared from {endpoint} during the download. Try again.")
    return DownloadError(f"Downloading {repo_id} from {endpoint} failed ({type(err).__name__}: {err}). "
                         "Check the connection (and HF_ENDPOINT), then try again; files that arrived are kept.")


def list_repository(repo: str, branch: str | None) -> tuple[str, str, str, list[RemoteFile]]:
    """(repo_id, branch, commit, files) as the hub lists them; downloads nothing."""
    from huggingface_hub import HfApi

    repo_id, url_branch = parse_repo_id(repo)
    branch = check_branch(branch) if (branch or "").strip() else (url_branch or "main")
    endpoint = hub_endpoint()
    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=branch, files_metadata=True)
    except Exception as err:  # noqa: BLE001 - huggingface_hub's and httpx's errors, reworded
        raise _hub_error(err, repo_id, branch, endpoint) from None
    files = [RemoteFile(s.rfilename, s.size or 0) for s in info.siblings or []]
    return repo_id, branch, info.sha or branch, files


def plan_download(repo: str, branch: str | None, file: str | None, models_dir: Path) -> DownloadPlan:
    """Ask the hub what the repository holds and decide what goes where; downloads nothing."""
    if (file or "").strip() and not check_file_name(file).lower().endswith(".gguf"):
        raise BadNameError(f"The File box is for one GGUF file (name ending in .gguf), not {file!r}. "
                           "Leave it empty to download the whole model folder.")
    repo_id, branch, commit, remote = list_repository(repo, branch)
    files = choose_files(remote, file)
    name = Path(files[0].name).name if file else folder_name(repo_id, branch)
    target = models_dir / name
    if target.exists():
        raise DownloadError(f"{target} already exists. Delete or rename it first to download it again.")
    partial = models_dir / f"{folder_name(repo_id, branch)}.partial"
    return DownloadPlan(repo_id, branch, commit, files, partial, target, hub_endpoint())


# --- progress ---------------------------------------------------------------------------------


@dataclass
class ByteProgress:
    """Bytes arrived across all files, reported as a fraction at most ~8 times a second."""

    total: int
    report: ProgressCallback
    cancel: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    current: str = ""
    _last: float = 0.0

    def add(self, n: int) -> None:
        if self.cancel.is_set():
            raise DownloadCancelled("The download was stopped. Start it again to resume where it stopped.")
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.125:
            self._last = now
            self.report(self.fraction, f"{self.current}: {_mb(self.done)} of {_mb(self.total)}")

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) * 0.99 if self.total else 0.0

    def bar_class(self) -> type:
        """A tqdm-shaped class bound to this counter, for ``hf_hub_download(tqdm_class=...)``."""
        progress = self

        class _Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.n = kwargs.get("initial", 0) or 0
                if self.n:
                    progress.add(self.n)

            def update(self, n: int | float | None = 1) -> None:
                self.n += int(n or 0)
                progress.add(int(n or 0))

            def __enter__(self) -> "_Bar":
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def close(self) -> None:
                return None

            def set_description(self, *args: Any, **kwargs: Any) -> None:
                return None

            set_postfix_str = set_description_str = refresh = set_description

        return _Bar


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


# --- running ----------------------------------------------------------------------------------


def run_download(plan: DownloadPlan, progress: ProgressCallback, cancel: threading.Event | None = None) -> Path:
    """Fetch every file of ``plan`` into its .partial folder, then move it into place."""
    from huggingface_hub import hf_hub_download

    counter = ByteProgress(plan.total_bytes, progress, cancel or threading.Event())
    plan.partial.mkdir(parents=True, exist_ok=True)
    progress(0.0, f"Downloading {len(plan.files)} file(s) of {plan.repo_id} ({_mb(plan.total_bytes)})")
    for remote in plan.files:
        counter.current = remote.name
        before = counter.done
        try:
            hf_hub_download(plan.repo_id, remote.name, revision=plan.commit, local_dir=plan.partial,
                            endpoint=plan.endpoint, tqdm_class=counter.bar_class())
        except DownloadCancelled:
            raise
        except Exception as err:  # noqa: BLE001 - reworded for the user
            raise _hub_error(err, plan.repo_id, plan.branch, plan.endpoint) from None
        counter.done = before + remote.size  # files already present count as arrived
        progress(counter.fraction, f"{remote.name}: done ({_mb(counter.done)} of {_mb(plan.total_bytes)})")
    return _finish(plan, progress)


def _finish(plan: DownloadPlan, progress: ProgressCallback) -> Path:
    shutil.rmtree(plan.partial / ".cache", ignore_errors=True)  # huggingface_hub's resume bookkeeping
    if plan.is_single_file:
        os.replace(plan.partial / plan.files[0].name, plan.target)
        shutil.rmtree(plan.partial, ignore_errors=True)
    else:
        os.replace(plan.partial, plan.target)
    progress(1.0, f"Downloaded {plan.repo_id} to {plan.target}")
    return plan.target


def download_model(repo: str, branch: str | None, file: str | None, models_dir: Path,
                   progress: ProgressCallback, cancel: threading.Event | None = None) -> Path:
    """Plan and run a download; returns the new model folder (or .gguf file)."""
    plan = plan_download(repo, branch, file, models_dir)
    return run_download(plan, progress, cancel)
