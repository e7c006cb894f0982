"""The arena over HTTP, under /v1/arena: battles, votes, judging, the leaderboard and exports.

The API has no sign-in of its own, so its battles belong to the local user (the one the web UI
uses without --gradio-auth), as characters do. Reading and voting need the API key; anything
that generates (a battle's turns, the judge, run-all) may load another model, so it needs the
key that may load models (the admin key when one is set), as /v1/internal/model/load does.
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from modules.api.auth import KeyCheck
from modules.api.routes_openai import parse
from modules.api.schemas import Body
from modules.core.arena.battle import arena_of
from modules.core.arena.judge import JUDGE_PARAMS, judge_battle
from modules.core.arena.report import boards, export_csv, export_json
from modules.core.arena.runner import questions_for, run_all
from modules.core.context import Context
from modules.core.presets import params_from_dict
from modules.core.sampling import SamplerParams
from modules.core.store.base import DEFAULT_USER

PREFIX = "/v1/arena"
USER = DEFAULT_USER


class TurnBody(Body):
    prompt: str = Field(min_length=1, max_length=100_000)
    params: dict = Field(default_factory=dict)  # sampler settings by their preset names, both sides alike


class BattleBody(TurnBody):
    models: list[str] = Field(default_factory=list)  # pick two at random from these
    model_a: str | None = None
    model_b: str | None = None


class VoteBody(Body):
    vote: Literal["a", "b", "tie", "both_bad"]


class JudgeBody(Body):
    judge: str = Field(min_length=1)


class RunBody(Body):
    model_a: str = Field(min_length=1)
    model_b: str = Field(min_length=1)
    judge: str | None = None
    question_ids: list[str] | None = None  # default: the whole bundled set
    params: dict = Field(default_factory=dict)


def _params(values: dict) -> SamplerParams:
    return params_from_dict(values, "The arena request's params") if values else SamplerParams()


def _play(ctx: Context, battle_id: int, body: TurnBody) -> dict:
    arena = arena_of(ctx)
    last = None
    for last in arena.play_turn(USER, battle_id, body.prompt, _params(body.params)):
        pass
    return {"battle_id": battle_id, "turn": last.position, "answer_a": last.answer_a, "answer_b": last.answer_b}


def _start(ctx: Context, body: BattleBody) -> dict:
    enabled = body.models or ctx.registry.names()
    battle_id = arena_of(ctx).start(USER, enabled, body.model_a, body.model_b)
    return _play(ctx, battle_id, body)


def _hidden(row: dict) -> dict:
    if row.get("vote") is None:
        row = {**row, "model_a": None, "model_b": None}
    return row


def _run(ctx: Context, body: RunBody) -> dict:
    questions = questions_for(ctx.config.user_data_dir)
    if body.question_ids is not None:
        wanted = set(body.question_ids)
        questions = [q for q in questions if q.id in wanted]
    report = run_all(arena_of(ctx), USER, (body.model_a, body.model_b), questions, _params(body.params),
                     judge=body.judge)
    return {"answered": report.answered, "skipped": report.skipped, "judged": report.judged,
            "battle_ids": report.battle_ids}


def _board(ctx: Context, scope: str, rounds: int) -> dict:
    result = boards(arena_of(ctx).store, None if scope == "all" else USER, rounds=rounds)
    return {"humans": result["humans"].as_dict(),
            "judges": {name: board.as_dict() for name, board in result["judges"].items()},
            "agreement": result["agreement"]}


def arena_router(ctx: Context, keys: KeyCheck) -> APIRouter:
    router = APIRouter(prefix=PREFIX, dependencies=[Depends(keys.user)])
    store = lambda: arena_of(ctx).store  # noqa: E731 - opened on first use

    @router.get("/questions")
    async def questions() -> dict:
        return {"questions": [{"id": q.id, "category": q.category, "turns": list(q.turns)}
                              for q in await run_in_threadpool(questions_for, ctx.config.user_data_dir)]}

    @router.post("/battles", dependencies=[Depends(keys.admin)])
    async def create(request: Request) -> dict:
        body = await parse(request, BattleBody)
        return await run_in_threadpool(_start, ctx, body)

    @router.post("/battles/{battle_id}/turns", dependencies=[Depends(keys.admin)])
    async def turn(battle_id: int, request: Request) -> dict:
        body = await parse(request, TurnBody)
        return await run_in_threadpool(_play, ctx, battle_id, body)

    @router.get("/battles")
    async def battles() -> dict:
        return {"battles": [_hidden(row) for row in await run_in_threadpool(store().list_battles, USER)]}

    @router.get("/battles/{battle_id}")
    async def battle(battle_id: int) -> dict:
        return await run_in_threadpool(store().get_battle, USER, battle_id)

    @router.post("/battles/{battle_id}/vote")
    async def vote(battle_id: int, request: Request) -> dict:
        body = await parse(request, VoteBody)
        return await run_in_threadpool(store().vote_battle, USER, battle_id, body.vote)

    @router.post("/battles/{battle_id}/judge", dependencies=[Depends(keys.admin)])
    async def judge(battle_id: int, request: Request) -> dict:
        body = await parse(request, JudgeBody)
        result = await run_in_threadpool(judge_battle, arena_of(ctx), USER, battle_id, body.judge, JUDGE_PARAMS)
        return {"battle_id": battle_id, "judge": body.judge, "verdict": result.verdict, **result.detail()}

    @router.post("/run", dependencies=[Depends(keys.admin)])
    async def run(request: Request) -> dict:
        body = await parse(request, RunBody)
        return await run_in_threadpool(_run, ctx, body)

    @router.get("/leaderboard")
    async def leaderboard(scope: Literal["mine", "all"] = "mine", rounds: int = 200) -> dict:
        return await run_in_threadpool(_board, ctx, scope, max(0, min(rounds, 2000)))

    @router.get("/export")
    async def export(format: Literal["json", "csv"] = "json") -> PlainTextResponse:
        if format == "csv":
            return PlainTextResponse(await run_in_threadpool(export_csv, store(), USER), media_type="text/csv")
        return PlainTextResponse(await run_in_threadpool(export_json, store(), USER), media_type="application/json")

    return router
