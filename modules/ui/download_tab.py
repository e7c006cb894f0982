"""The Download tab: fetch a model from a Hugging Face hub into models/, with progress.

Type a repository id (or paste its URL), optionally a branch, and for GGUF repositories
the one file wanted. "List files" shows what the repository holds before downloading.
"""
from __future__ import annotations

import gradio as gr

from modules.core.context import Context
from modules.core.download import DownloadCancelled, list_repository, plan_download, run_download
from modules.core.errors import CorralError
from modules.ui.admin_guard import admin_refusal
from modules.ui.progress import run_reporting

DOWNLOAD_CONCURRENCY = "model-download"


def files_table(repo: str, branch: str) -> str:
    """The repository's files and sizes, as Markdown."""
    repo_id, branch, commit, files = list_repository(repo, branch)
    rows = [f"| {f.name} | {f.size / 1e6:,.1f} MB |" for f in files]
    return "\n".join([f"**{repo_id}** at {branch} ({commit[:10]}): {len(files)} files", "",
                      "| file | size |", "|---|---|", *rows])


def download_status(ctx: Context, repo: str, branch: str, file: str, report, cancel=None) -> str:
    """Download and say where it went (or why not)."""
    try:
        plan = plan_download(repo, branch, file, ctx.registry.models_dir)
        target = run_download(plan, report, cancel)
    except DownloadCancelled as err:
        return f"⏹️ {err}"
    except CorralError as err:
        return f"⚠️ {err}"
    return f"Downloaded **{plan.repo_id}** to `{target}`. Pick **{target.name}** on the Model tab."


def build(ui) -> None:
    with gr.Row():
        repo = gr.Textbox(label="Repository", placeholder="owner/name or https://huggingface.co/owner/name",
                          elem_id="download-repo", scale=4)
        branch = gr.Textbox(label="Branch", placeholder="main", elem_id="download-branch", scale=1)
        file = gr.Textbox(label="File (GGUF repositories)", placeholder="model.Q4_K_M.gguf",
                          elem_id="download-file", scale=2)
    with gr.Row():
        listing = gr.Button("List files", elem_id="download-list")
        start = gr.Button("Download", variant="primary", elem_id="download-start")
        stop = gr.Button("Stop", variant="stop", elem_id="download-stop")
    status = gr.Markdown(elem_id="download-status")
    ui.components.update(download_repo=repo, download_branch=branch, download_file=file, download_list=listing,
                         download_start=start, download_stop=stop, download_status=status)


def wire(ui) -> None:
    ctx: Context = ui.ctx
    c = ui.components
    fields = [c["download_repo"], c["download_branch"], c["download_file"]]

    def list_files(repo: str, branch: str, _file: str) -> str:
        try:
            return files_table(repo, branch)
        except CorralError as err:
            return f"⚠️ {err}"

    def download(repo: str, branch: str, file: str, request: gr.Request, progress=gr.Progress()):
        refusal = admin_refusal(ctx.config.server, request, "download models")
        if refusal:
            yield refusal
            return
        yield f"⏳ Asking the hub about {repo}…"
        cancel = ui.cancels.fresh(f"{request.session_hash}:download")
        yield run_reporting(lambda report: download_status(ctx, repo, branch, file, report, cancel), progress)

    def stop(request: gr.Request) -> None:
        ui.cancels.cancel(f"{request.session_hash}:download")

    c["download_list"].click(list_files, fields, c["download_status"], api_name="download_list")
    event = c["download_start"].click(download, fields, c["download_status"], api_name="download",
                                      concurrency_id=DOWNLOAD_CONCURRENCY, concurrency_limit=2)
    c["download_stop"].click(stop, None, None, queue=False, api_name="download_stop")
    if "model_dropdown" in c:  # the new model shows up in the Model tab's list
        event.then(lambda name: gr.update(choices=ctx.registry.names(), value=name), c["model_dropdown"],
                   c["model_dropdown"], api_visibility="private")
