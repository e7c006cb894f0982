"""The arena: blind side-by-side battles between two models, votes, ratings and a model as judge.

battle.py (answers and battles), judge.py (pairwise judge), ratings.py (Bradley–Terry, Elo,
bootstrap), report.py (leaderboards, exports), runner.py (the question set, "Run all questions").
"""
