"""The arena's HTTP routes (/v1/arena) on two tiny models: battles, votes, judging, leaderboard, export, keys."""
from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from arena_helpers import ALPACA, KOALA, arena_context

from modules.api.app import create_api
from modules.core.config import ServerOptions

SHORT = {"do_sample": False, "max_new_tokens": 4}
API_KEY, ADMIN_KEY = "reader-key", "admin-key"


@pytest.fixture(scope="module")
def ctx(arena_models_dir, tmp_path_factory):
    yield from arena_context(arena_models_dir, tmp_path_factory.mktemp("arena-api-data"))


@pytest.fixture(scope="module")
def api(ctx):
    with TestClient(create_api(ctx, ServerOptions(api_port=0))) as client:
        yield client


def test_a_battle_over_the_api_hides_names_until_the_vote(api, ctx):
    created = api.post("/v1/arena/battles", json={"prompt": "Say hi.", "models": [ALPACA, KOALA], "params": SHORT})
    assert created.status_code == 200, created.text
    body = created.json()
    battle_id = body["battle_id"]
    assert body["turn"] == 0 and isinstance(body["answer_a"], str) and "model_a" not in body
    follow = api.post(f"/v1/arena/battles/{battle_id}/turns", json={"prompt": "Again.", "params": SHORT})
    assert follow.status_code == 200 and follow.json()["turn"] == 1
    shown = api.get(f"/v1/arena/battles/{battle_id}").json()
    assert shown["model_a"] is None and len(shown["turns"]) == 2
    assert api.get("/v1/arena/battles").json()["battles"][0]["model_a"] is None
    voted = api.post(f"/v1/arena/battles/{battle_id}/vote", json={"vote": "a"})
    assert voted.status_code == 200 and {voted.json()["model_a"], voted.json()["model_b"]} == {ALPACA, KOALA}
    again = api.post(f"/v1/arena/battles/{battle_id}/vote", json={"vote": "b"})
    assert again.status_code == 400 and "already been voted" in again.json()["error"]["message"]
    board = api.get("/v1/arena/leaderboard", params={"rounds": 10}).json()
    rows = board["humans"]["rows"]
    assert [r["model"] for r in rows][0] == voted.json()["model_a"] and rows[0]["wins"] == 1
    assert board["humans"]["win_rates"]["models"] == sorted([ALPACA, KOALA])
    assert ctx.store.list_battles("local")[0]["vote"] == "a"  # the API's battles are the local user's


def test_judge_run_and_export_over_the_api(api):
    run = api.post("/v1/arena/run", json={"model_a": ALPACA, "model_b": KOALA, "question_ids": ["math-01"],
                                          "params": SHORT})
    assert run.status_code == 200 and run.json()["answered"] == 1
    assert api.post("/v1/arena/run", json={"model_a": KOALA, "model_b": ALPACA, "question_ids": ["math-01"],
                                           "params": SHORT}).json()["skipped"] == 1
    battle_id = run.json()["battle_ids"][0]
    judged = api.post(f"/v1/arena/battles/{battle_id}/judge", json={"judge": KOALA})
    assert judged.status_code == 200 and judged.json()["verdict"] in ("a", "b", "tie", "unparsed")
    assert set(judged.json()) >= {"first_order", "swapped_order"}
    board = api.get("/v1/arena/leaderboard", params={"rounds": 5}).json()
    assert KOALA in board["judges"]
    assert board["humans"]["verdicts"] == 1  # the judge's verdict stays off the human board
    rows = list(csv.DictReader(io.StringIO(api.get("/v1/arena/export", params={"format": "csv"}).text)))
    assert {r["question_id"] for r in rows} >= {"math-01"} and all(r["model_a"] for r in rows)
    exported = api.get("/v1/arena/export").json()
    assert exported["format"] == "corral-arena-1" and len(exported["battles"]) == 2
    assert len(api.get("/v1/arena/questions").json()["questions"]) >= 40


def test_the_users_own_questions_join_the_set(api, ctx):
    own = ctx.config.user_data_dir / "arena_questions.yaml"
    own.write_text("questions:\n  - {id: mine-01, category: hobby, turns: [\"How do I start knitting?\"]}\n")
    try:
        listed = api.get("/v1/arena/questions").json()["questions"]
        assert listed[-1] == {"id": "mine-01", "category": "hobby", "turns": ["How do I start knitting?"]}
        own.write_text("questions:\n  - {id: math-01, category: math, turns: [again]}\n")
        clash = api.get("/v1/arena/questions")
        assert clash.status_code == 400 and "'math-01' is used twice" in clash.json()["error"]["message"]
        own.write_text("questions: [{id: x}]\n")
        broken = api.get("/v1/arena/questions")
        assert broken.status_code == 400 and "arena_questions.yaml could not be read" in broken.json()["error"]["message"]
    finally:
        own.unlink()


def test_bad_requests_say_what_is_wrong(api):
    assert api.post("/v1/arena/battles/999999/vote", json={"vote": "a"}).status_code == 404
    bad_vote = api.post("/v1/arena/battles/1/vote", json={"vote": "maybe"})
    assert bad_vote.status_code == 400 and bad_vote.json()["error"]["param"] == "vote"
    same = api.post("/v1/arena/battles", json={"prompt": "x", "model_a": ALPACA, "model_b": ALPACA})
    assert same.status_code == 400 and "two different models" in same.json()["error"]["message"]
    params = api.post("/v1/arena/battles", json={"prompt": "x", "params": {"no_such": 1}})
    assert params.status_code == 400 and "no_such" in params.json()["error"]["message"]


def test_keys_guard_the_arena_like_the_other_routes(ctx):
    options = ServerOptions(api_port=0, api_key=API_KEY, admin_key=ADMIN_KEY)
    with TestClient(create_api(ctx, options)) as client:
        assert client.get("/v1/arena/leaderboard").status_code == 401
        reader = {"Authorization": f"Bearer {API_KEY}"}
        assert client.get("/v1/arena/leaderboard", params={"rounds": 0}, headers=reader).status_code == 200
        # generating may load another model: the admin key's business
        battle = {"prompt": "hi", "models": [ALPACA, KOALA], "params": SHORT}
        assert client.post("/v1/arena/battles", json=battle, headers=reader).status_code == 401
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        made = client.post("/v1/arena/battles", json=battle, headers=admin)
        assert made.status_code == 200
        assert client.post(f"/v1/arena/battles/{made.json()['battle_id']}/vote", json={"vote": "tie"},
                           headers=reader).status_code == 200
