"""Ratings from pairwise verdicts: Bradley–Terry (maximum likelihood), Elo, bootstrap intervals, win rates.

Pure functions over :class:`Outcome` lists. A tie (and "both bad") counts as half a win
for each side, as in Chatbot Arena's leaderboard. Ratings are on the Elo scale:
``1000 + 400 * log10(strength)``, so a 190-point gap means the stronger model wins
three times in four.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCALE = 400.0 / math.log(10.0)  # natural-log strength -> Elo points
BASE = 1000.0
WINNER_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


@dataclass(frozen=True)
class Outcome:
    model_a: str
    model_b: str
    verdict: str  # "a", "b", "tie" or "both_bad" ("unparsed" verdicts are left out by :func:`outcomes_from`)

    @property
    def score_a(self) -> float:
        return WINNER_SCORE[self.verdict]


def outcomes_from(rows: list[dict]) -> list[Outcome]:
    """Outcomes from store rows (model_a, model_b, verdict); unparsed and unknown verdicts are skipped."""
    return [Outcome(r["model_a"], r["model_b"], r["verdict"]) for r in rows if r["verdict"] in WINNER_SCORE]


def models_of(outcomes: list[Outcome]) -> list[str]:
    return sorted({o.model_a for o in outcomes} | {o.model_b for o in outcomes})


def _win_matrix(outcomes: list[Outcome], index: dict[str, int]) -> np.ndarray:
    """wins[i, j]: games i won against j (ties as halves)."""
    wins = np.zeros((len(index), len(index)))
    for o in outcomes:
        a, b = index[o.model_a], index[o.model_b]
        wins[a, b] += o.score_a
        wins[b, a] += 1.0 - o.score_a
    return wins


def bradley_terry(outcomes: list[Outcome], prior: float = 0.0, iterations: int = 100) -> dict[str, float]:
    """Bradley–Terry ratings by Newton's method on the log-likelihood (Elo scale, mean ``BASE``).

    ``prior`` adds an L2 penalty ``prior/2 * sum(theta^2)`` on the log-strengths, which keeps an
    unbeaten (or winless) model finite; with ``prior=0`` such a model's rating is large but
    capped by the iteration count.
    """
    names = models_of(outcomes)
    if not names:
        return {}
    wins = _win_matrix(outcomes, {name: i for i, name in enumerate(names)})
    games = wins + wins.T
    theta = np.zeros(len(names))
    for _ in range(iterations):
        step = _newton_step(theta, wins, games, prior)
        theta = np.clip(theta + step, -20.0, 20.0)
        theta -= theta.mean()
        if np.max(np.abs(step)) < 1e-10:
            break
    return {name: BASE + SCALE * float(t) for name, t in zip(names, theta)}


def _newton_step(theta: np.ndarray, wins: np.ndarray, games: np.ndarray, prior: float) -> np.ndarray:
    """Newton step for the log-likelihood sum_ij wins_ij * log sigmoid(theta_i - theta_j) - prior/2 |theta|^2."""
    p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # p[i, j]: P(i beats j)
    gradient = wins.sum(axis=1) - (games * p).sum(axis=1) - prior * theta
    weight = games * p * (1.0 - p)
    hessian = weight - np.diag(weight.sum(axis=1) + prior)  # negative semi-definite
    # The likelihood does not change when every theta moves together: lstsq takes the smallest step.
    step, *_ = np.linalg.lstsq(-hessian, gradient, rcond=None)
    return np.clip(step, -5.0, 5.0)


def elo(outcomes: list[Outcome], k: float = 32.0, initial: float = BASE) -> dict[str, float]:
    """Online Elo in the order given: each game moves both ratings by ``k * (score - expected)``."""
    ratings: dict[str, float] = {}
    for o in outcomes:
        ra, rb = ratings.setdefault(o.model_a, initial), ratings.setdefault(o.model_b, initial)
        expected_a = 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))
        ratings[o.model_a] = ra + k * (o.score_a - expected_a)
        ratings[o.model_b] = rb - k * (o.score_a - expected_a)
    return ratings


def bootstrap_intervals(outcomes: list[Outcome], rounds: int = 200, seed: int = 0, prior: float = 0.01,
                        level: float = 0.95) -> dict[str, tuple[float, float]]:
    """(low, high) Bradley–Terry rating per model over ``rounds`` resamples of the outcomes."""
    names = models_of(outcomes)
    if not names or rounds <= 0:
        return {name: (math.nan, math.nan) for name in names}
    rng = np.random.default_rng(seed)
    samples = {name: [] for name in names}
    for _ in range(rounds):
        picked = [outcomes[i] for i in rng.integers(0, len(outcomes), len(outcomes))]
        ratings = bradley_terry(picked, prior=prior, iterations=30)
        for name in names:
            samples[name].append(ratings.get(name, BASE))  # absent from this resample: no evidence
    tail = (1.0 - level) / 2.0 * 100.0
    return {name: (float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail)))
            for name, values in samples.items()}


def win_rates(outcomes: list[Outcome]) -> tuple[list[str], list[list[float | None]]]:
    """(names, matrix): matrix[i][j] is the share of games model i won against model j (ties as
    halves), None where they never met."""
    names = models_of(outcomes)
    wins = _win_matrix(outcomes, {name: i for i, name in enumerate(names)})
    games = wins + wins.T
    matrix = [[float(wins[i, j] / games[i, j]) if games[i, j] else None for j in range(len(names))]
              for i in range(len(names))]
    return names, matrix


def vote_counts(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """Per model: games, wins, losses, ties (both-bad counted with ties)."""
    counts = {name: {"games": 0, "wins": 0, "losses": 0, "ties": 0} for name in models_of(outcomes)}
    for o in outcomes:
        for name, score in ((o.model_a, o.score_a), (o.model_b, 1.0 - o.score_a)):
            row = counts[name]
            row["games"] += 1
            row["wins" if score == 1.0 else "losses" if score == 0.0 else "ties"] += 1
    return counts


def leaderboard(outcomes: list[Outcome], rounds: int = 200, seed: int = 0, prior: float = 0.01) -> list[dict]:
    """One row per model, best first: Bradley–Terry rating with its interval, Elo, and vote counts."""
    ratings = bradley_terry(outcomes, prior=prior)
    intervals = bootstrap_intervals(outcomes, rounds=rounds, seed=seed, prior=prior)
    online = elo(outcomes)
    counts = vote_counts(outcomes)
    rows = [{"model": name, "rating": round(rating, 1), "ci_low": round(intervals[name][0], 1),
             "ci_high": round(intervals[name][1], 1), "elo": round(online[name], 1), **counts[name]}
            for name, rating in ratings.items()]
    return sorted(rows, key=lambda row: -row["rating"])
