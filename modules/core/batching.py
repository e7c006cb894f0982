"""Continuous batching for the Transformers backend: concurrent requests share decode steps.

One scheduler thread per loaded model owns the model. Between two decode steps
it admits waiting requests and drops finished ones (its budget reached, EOS, a
Stop or a client that hung up), so a request joins or leaves without waiting
for the others; a short reply is not held behind a long one.

Why not transformers' own ``ContinuousBatchingManager`` / ``generate_batch``:
it applies one logits-processor list, built from one generation config, to every
request (per request it only takes a few kwargs such as temperature, top-k and
top-p). Our requests each carry their own processors (penalties, logit bias,
Mirostat, XTC, extensions' processors) and their own seeded generator, so the
decode loop is batched here over the model's ordinary ``DynamicCache``:

* a new request's prompt is prefilled alone (batch 1, its own cache; a long one
  in chunks of ``prefill_tokens``, with a decode step of the running requests
  between two chunks), then its keys and values are merged into the batch
  cache, left-padded to the common length; a 2-D attention mask hides the padding and each row gets its own
  ``position_ids``, so every row sees exactly what it would see alone;
* each step feeds one token per row ([B, 1]) and returns logits [B, V]; each
  row then runs its own processors and picks with its own generator;
* rows that leave are removed with ``batch_select_indices`` and leading columns
  that are padding in every row are cut, so the cache does not keep growing.

Models whose cache is not a plain DynamicCache (sliding windows, hybrid
caches) and the compiled static-cache path (``fast_decode.py``) are not batched:
:func:`batcher_for` returns None and the engine queues requests as before.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from modules.core.loaders.base import Piece
from modules.core.loaders.decoding import cache_argument_name, pick_token
from modules.core.logits import Mirostat, build_processors
from modules.core.sampling import SamplerParams

log = logging.getLogger(__name__)
_END = object()


@dataclass
class _Slot:
    """One request in the batch: its own sampling state and the queue its pieces go to."""

    ids: list[int]
    params: SamplerParams
    processors: Any  # LogitsProcessorList
    generator: torch.Generator | None
    budget: int  # tokens at most
    stop_ids: set[int]  # EOS ids that end this request (empty when EOS is banned)
    cancel: threading.Event
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    closed: bool = False  # the consumer stopped reading
    context: torch.Tensor | None = None  # [1, L] prompt + reply so far, kept only when processors read it
    length: int = 0  # real (unpadded) positions of this row in the cache (while prefilling: read so far)
    prefill: DynamicCache | None = None  # this request's own cache while its prompt is read
    produced: int = 0
    token: int | None = None  # the last picked token: the next step's input
    done: bool = False

    @property
    def finished(self) -> bool:
        return self.done or self.closed or self.cancel.is_set()


class Batcher:
    """Runs every generation of one model in one scheduler thread, batching their decode steps."""

    def __init__(self, model: torch.nn.Module, eos_ids: set[int], max_batch: int = 32,
                 prefill_tokens: int = 256) -> None:
        """``max_batch``: rows one step carries at most; ``prefill_tokens``: prompt tokens read
        between two decode steps (a longer prompt is read in chunks)."""
        self.model, self.eos_ids, self.max_batch = model, set(eos_ids), max_batch
        self.prefill_tokens = prefill_tokens
        self.cache_arg = cache_argument_name(model)
        self.device = next(model.parameters()).device
        self._pending: list[_Slot] = []
        self._rows: list[_Slot] = []  # in batch-row order
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [B, T]: 1 real position, 0 padding
        self._lock = threading.Lock()  # guards _pending, _rows, _thread and _closing
        self._closing = False
        self.steps = 0  # batched decode steps run (for tests and the log)
        self.widest = 0  # the most rows one step has carried
        # The scheduler thread runs only while there is work, so an idle or forgotten Batcher
        # holds no thread (and no thread holds the model).
        self._thread: threading.Thread | None = None

    # -- the consumer's side -------------------------------------------------------------------------
    def stream(self, ids: list[int], params: SamplerParams, cancel: threading.Event,
               logits_processors: list = (), budget: int | None = None) -> Iterator[Piece]:
        """Pieces of one generation; joins the running batch at the next step."""
        slot = self._slot(ids, params, cancel, logits_processors, budget)
        with self._lock:
            if self._closing:
                raise RuntimeError("The model is being unloaded; send the request again once a model is loaded.")
            self._pending.append(slot)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="corral-batcher", daemon=True)
                self._thread.start()
        try:
            while True:
                item = slot.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            slot.closed = True  # the scheduler lets the row go before its next step

    def _slot(self, ids: list[int], params: SamplerParams, cancel: threading.Event,
              extra: list, budget: int | None) -> _Slot:
        generator = torch.Generator(device="cpu").manual_seed(params.seed) if params.seed >= 0 else None
        processors = build_processors(params, self.eos_ids, generator)
        processors.extend(extra)
        stop_ids = set() if params.ban_eos_token else set(self.eos_ids)
        return _Slot(list(ids), params, processors, generator, budget or params.max_new_tokens, stop_ids, cancel)

    @property
    def active(self) -> int:
        """Requests waiting to join or in the batch."""
        with self._lock:
            return len(self._pending) + len(self._rows)

    def close(self) -> None:
        """End every request and stop the scheduler thread."""
        with self._lock:
            self._closing = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        self.model = None  # type: ignore[assignment]

    # -- the scheduler thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closing or (not self._pending and not self._rows):
                    self._thread = None  # the next request starts a new scheduler thread
                    break
            try:
                with torch.inference_mode():
                    self._prefill_some()
                    self._drop_finished()
                    if self._rows:
                        self._step()
                    self._drop_finished()
            except Exception as err:  # noqa: BLE001 - every waiting consumer gets the error
                log.exception("Batched generation failed")
                self._fail_all(err)
        if self._closing:
            self._fail_all(RuntimeError("The model was unloaded during generation."))

    def _fail_all(self, err: Exception) -> None:
        with self._lock:
            slots = self._rows + self._pending
            self._rows, self._pending, self._cache, self._mask = [], [], None, None
        for slot in slots:
            slot.out.put(err)

    def _prefill_some(self) -> None:
        """Read up to ``prefill_tokens`` prompt tokens of waiting requests, oldest first.

        A long prompt is read in chunks over several turns, with a decode step of the running
        requests between two chunks, so it does not stall their streams; a request whose prompt
        is read emits its first token and joins the batch.
        """
        budget = self.prefill_tokens
        while budget > 0:
            with self._lock:
                if not self._pending or len(self._rows) >= self.max_batch:
                    return
                slot = self._pending[0]
            if slot.finished:
                with self._lock:
                    self._pending.remove(slot)
                slot.out.put(_END)
                continue
            take = min(len(slot.ids) - slot.length, budget)
            budget -= take
            logits = self._prefill_chunk(slot, take)
            if slot.length == len(slot.ids):
                slot.context = torch.tensor([slot.ids], dtype=torch.long, device=self.device) \
                    if slot.processors else None  # [1, L]
                self._emit(slot, logits)
                self._merge(slot, slot.prefill)
                slot.prefill = None

    def _prefill_chunk(self, slot: _Slot, take: int) -> torch.Tensor:
        """Run the next ``take`` prompt tokens of ``slot`` through its own cache; last logits [1, V]."""
        if slot.prefill is None:
            slot.prefill = DynamicCache(config=self.model.config)
        chunk = torch.tensor([slot.ids[slot.length:slot.length + take]], dtype=torch.long, device=self.device)
        out = self.model(input_ids=chunk, use_cache=True, logits_to_keep=1, **{self.cache_arg: slot.prefill})
        slot.length += take
        return out.logits[:, -1, :].float()

    def _merge(self, slot: _Slot, cache: DynamicCache) -> None:
        if any(type(layer) is not DynamicLayer for layer in cache.layers):
            raise RuntimeError("This model's cache cannot be batched (not a plain DynamicCache).")
        length = slot.length
        row_mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if self._cache is None:
            self._cache, self._mask = cache, row_mask
            self._join(slot)
            return
        common = self._mask.shape[1]
        if length > common:
            self._pad_batch(length - common)
        elif length < common:
            _pad_layers(cache, common - length)
            row_mask = torch.cat([torch.zeros((1, common - length), dtype=torch.long, device=self.device),
                                  row_mask], dim=1)
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self._mask = torch.cat([self._mask, row_mask], dim=0)
        self._join(slot)

    def _join(self, slot: _Slot) -> None:
        with self._lock:
            self._pending.remove(slot)
            self._rows.append(slot)

    def _pad_batch(self, extra: int) -> None:
        _pad_layers(self._cache, extra)
        pad = torch.zeros((self._mask.shape[0], extra), dtype=torch.long, device=self.device)
        self._mask = torch.cat([pad, self._mask], dim=1)

    def _step(self) -> None:
        """One decode step for every row: [B, 1] tokens in, [B, V] logits out, one piece per row."""
        rows = self._rows
        tokens = torch.tensor([[slot.token] for slot in rows], dtype=torch.long, device=self.device)  # [B, 1]
        positions = torch.tensor([[slot.length] for slot in rows], dtype=torch.long, device=self.device)  # [B, 1]
        self._mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long, device=self.device)], dim=1)
        out = self.model(input_ids=tokens, attention_mask=self._mask, position_ids=positions, use_cache=True,
                         **{self.cache_arg: self._cache})
        logits = out.logits[:, -1, :].float()  # [B, V]
        self.steps += 1
        self.widest = max(self.widest, len(rows))
        for index, slot in enumerate(rows):
            slot.length += 1
            if slot.context is not None:
                slot.context = torch.cat([slot.context, tokens[index:index + 1]], dim=1)
            self._emit(slot, logits[index:index + 1])

    def _emit(self, slot: _Slot, logits: torch.Tensor) -> None:
        """Pick ``slot``'s next token from its logits [1, V] and send it to the consumer."""
        logprobs = torch.log_softmax(logits, dim=-1)  # before any processor, as the solo loop does
        scores = slot.processors(slot.context, logits) if slot.processors else logits
        token = pick_token(scores, slot.params.greedy, slot.generator)
        for proc in slot.processors:
            if isinstance(proc, Mirostat):
                proc.observe(token)
        slot.token, slot.produced = token, slot.produced + 1
        slot.out.put(Piece(token_id=token, logprob=float(logprobs[0, token])))
        if slot.produced >= slot.budget or token in slot.stop_ids:
            slot.done = True

    def _drop_finished(self) -> None:
        """Remove finished rows from the batch (their consumers get the end) and trim common padding."""
        keep = [i for i, slot in enumerate(self._rows) if not slot.finished]
        if len(keep) == len(self._rows):
            return
        leaving = [slot for slot in self._rows if slot.finished]
        with self._lock:
            self._rows = [self._rows[i] for i in keep]
        for slot in leaving:  # after the batch let go of them, so ``active`` already counts them out
            slot.out.put(_END)
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._trim()

    def _trim(self) -> None:
        """Cut leading columns that are padding in every row."""
        leading = int((self._mask.cumsum(dim=1) == 0).sum(dim=1).min())
        if leading == 0:
            return
        self._mask = self._mask[:, leading:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[..., leading:, :]
            layer.values = layer.values[..., leading:, :]


def _pad_layers(cache: DynamicCache, extra: int) -> None:
    """Add ``extra`` zero positions at the front (left) of every layer's keys and values."""
    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name)
            pad = tensor.new_zeros(tensor.shape[:-2] + (extra, tensor.shape[-1]))
            setattr(layer, name, torch.cat([pad, tensor], dim=-2))


def batcher_for(backend: Any) -> Batcher | None:
    """A Batcher for a Transformers backend on the normal loop; None where batching does not apply."""
    model = getattr(backend, "model", None)
    if getattr(getattr(backend, "info", None), "loader", "") != "transformers" or not isinstance(model, torch.nn.Module):
        return None
    fast = getattr(backend, "fast", None)
    if fast is not None and fast.usable:
        return None  # the compiled static-cache path keeps one shared cache: one request at a time
    probe = DynamicCache(config=model.config)
    if any(type(layer) is not DynamicLayer for layer in probe.layers):
        return None
    return Batcher(model, backend.eos_token_ids)


__all__ = ["Batcher", "batcher_for"]
