"""Reliability suite: bad input over the API and every file parser, faults, and concurrent streams.

    python -m bench.reliability           # the whole catalogue (a few minutes on two CPU cores)
    python -m bench.reliability --quick   # the short version the default test lane runs

Runs on tiny models built on the spot (the text they write does not matter here) and prints
one table: inputs tried, kinds, crashes, HTTP 500s, unclear rejections, faults survived,
streams held, messages lost. Every failure is listed under the table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

TINY, BROKEN = "tiny-llama", "broken-weights"


@dataclass
class Report:
    inputs: int = 0
    kinds: set[str] = field(default_factory=set)
    crashes: list[str] = field(default_factory=list)  # parser exceptions, API calls with no answer
    server_errors: list[str] = field(default_factory=list)  # HTTP 5xx, error events in a 200 stream
    unclear: list[str] = field(default_factory=list)  # 4xx without a clear message naming the field
    faults: list[tuple[str, bool, str]] = field(default_factory=list)
    streams: tuple[int, int] = (0, 0)
    lost: int = 0
    still_answers: bool = False
    seconds: float = 0.0
    sections: dict[str, float] = field(default_factory=dict)  # seconds per part of the run

    def rows(self) -> list[tuple[str, str]]:
        survived = sum(1 for _, ok, _ in self.faults if ok)
        return [("inputs tried", str(self.inputs)), ("distinct kinds of bad input", str(len(self.kinds))),
                ("crashes", str(len(self.crashes))), ("HTTP 500s (incl. errors in a 200 stream)",
                                                       str(len(self.server_errors))),
                ("rejections without a clear message", str(len(self.unclear))),
                ("faults survived", f"{survived}/{len(self.faults)}"),
                ("concurrent streams held", f"{self.streams[0]}/{self.streams[1]}"),
                ("messages lost (kill -9 mid-stream)", str(self.lost)),
                ("app answers afterwards", "yes" if self.still_answers else "NO"),
                ("seconds", f"{self.seconds:.0f} ({', '.join(f'{k} {v:.0f}' for k, v in self.sections.items())})")]

    def table(self) -> str:
        width = max(len(name) for name, _ in self.rows())
        lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in self.rows()]
        lines += ["", "Faults:"]
        lines += [f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in self.faults]
        for title, items in (("Crashes", self.crashes), ("HTTP 500s", self.server_errors),
                             ("Unclear rejections", self.unclear)):
            if items:
                lines += ["", f"{title}:"] + [f"  {item}" for item in items[:40]]
        return "\n".join(lines)


def build_models(folder: Path) -> tuple[Path, bytes]:
    """models/ with a tiny LLaMA and a copy whose weights are cut in half; and a tiny GGUF's bytes."""
    import shutil

    from tiny_gguf import build_tiny_gguf
    from tiny_models import build_tiny_llama

    models = folder / "models"
    build_tiny_llama(models / TINY, context=1024)
    shutil.copytree(models / TINY, models / BROKEN)
    weights = models / BROKEN / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    gguf = folder / "tiny.gguf"
    build_tiny_gguf(gguf)
    return models, gguf.read_bytes()


def run_api(report: Report, url: str, quick: bool) -> None:
    import httpx

    from bench.reliability_api import CHAT, ROUTES, field_cases, send, shape_cases

    routes = [CHAT] if quick else list(ROUTES)
    cases = field_cases(routes, TINY, quick=quick) + shape_cases(TINY, every_route=not quick)
    if not quick:
        cases += field_cases([CHAT, "/v1/completions"], TINY, stream=True)
    with httpx.Client(base_url=url, timeout=300) as client:
        for case in cases:
            verdict = send(client, case)
            report.inputs += 1
            report.kinds.add(f"api:{case.kind}")
            if verdict.problem:
                target = report.server_errors if verdict.server_error else report.unclear
                target.append(f"{case.kind}: {verdict.problem}")


def run_files(report: Report, folder: Path, tiny_model: Path, tiny_gguf: bytes, quick: bool) -> None:
    from bench.reliability_files import try_case
    from bench.reliability_parsers import parsers

    for number, parser in enumerate(parsers(tiny_model, tiny_gguf)):
        for index, case in enumerate(parser.cases):
            if quick and parser.name != "preset" and (case.kind == "deep-nesting" or case.kind.endswith("=long-text")):
                continue  # slow in PyYAML (seconds, tenths); the long run tries them on every YAML parser
            problem = try_case(parser, case, folder / f"p{number}-{index}")
            report.inputs += 1
            report.kinds.add(f"file:{parser.name}:{case.kind}")
            if problem:
                report.crashes.append(f"{parser.name}/{case.kind}: {problem}")


def run_faults(report: Report, ctx, url: str, models: Path, folder: Path, quick: bool) -> None:
    import httpx

    from bench import reliability_faults as faults

    with httpx.Client(base_url=url, timeout=300) as client:
        checks = [("client hangs up mid-stream", lambda: faults.hang_up_streaming(ctx, client)),
                  ("client hangs up while waiting (non-streaming)", lambda: faults.hang_up_waiting(ctx, client)),
                  ("model load fails (damaged weights)", lambda: faults.failed_load(ctx, client, BROKEN)),
                  ("model load runs out of memory", lambda: faults.out_of_memory_load(ctx, client)),
                  ("extension raises in every hook", lambda: faults.raising_extension(ctx, client)),
                  ("disk full while writing chats", lambda: faults.full_disk(folder)),
                  ("user_data unusable (a file in the way, a damaged database)",
                   lambda: faults.unusable_user_data(folder))]
        for name, check in checks:
            try:
                ok, detail = check()
            except Exception as err:  # noqa: BLE001 - a fault that breaks the check is not survived
                ok, detail = False, f"{type(err).__name__}: {err}"
            report.faults.append((name, ok, detail))
        if not quick:
            try:
                ok, report.lost, detail = faults.kill_mid_stream(models, TINY, folder)
            except Exception as err:  # noqa: BLE001 - the check itself broke: not survived
                ok, detail = False, f"{type(err).__name__}: {err}"
            report.faults.append(("kill -9 while a reply streams", ok, detail))
        report.streams = faults.concurrent_streams(url, 8 if quick else 32)
        report.still_answers = faults.answers(client)


def run(folder: Path, quick: bool = False) -> Report:
    from modules.api.server import start_api
    from modules.core.config import AppConfig, LoaderOptions, ServerOptions
    from modules.core.context import build_context

    started = time.perf_counter()
    report = Report()
    models, tiny_gguf = build_models(folder)
    config = AppConfig(models_dir=models, user_data_dir=folder / "user_data", extensions_dir=folder / "extensions",
                       characters_dir=folder / "characters", loader=LoaderOptions(cpu=True, dtype="float32"),
                       server=ServerOptions(api_port=0))
    ctx = build_context(config)
    ctx.models.load(TINY)
    api = start_api(ctx)
    try:
        for name, part in (("api", lambda: run_api(report, api.url, quick)),
                           ("files", lambda: run_files(report, folder / "files", models / TINY, tiny_gguf, quick)),
                           ("faults", lambda: run_faults(report, ctx, api.url, models, folder, quick))):
            section = time.perf_counter()
            part()
            report.sections[name] = time.perf_counter() - section
    finally:
        api.stop()
        ctx.models.unload()
    report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str]) -> int:
    import logging
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short version (chat route, fewer faults)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="corral-reliability-") as tmp:
        report = run(Path(tmp), quick=args.quick)
    print(report.table())
    failed = report.crashes or report.server_errors or report.unclear or not all(ok for _, ok, _ in report.faults)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
