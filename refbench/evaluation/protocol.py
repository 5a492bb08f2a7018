"""The evaluation protocol: how a set of samples was made and scored, and the refusal to mix two.

Every sample row records its sampler (scheduler and pipeline), number of steps, guidance scale,
height and width, and a sha256 of its prompt set's prompts (``generate``); every score row its
reward model's source and the sha256 of its weights (``score``; for the built-in toy oracles,
of the code that computes them). A win rate pairs samples by (prompt, evaluation seed): the
pairs are only comparable when both sides were sampled and scored the same way, so
``check_protocol`` refuses, in one line naming the field, a comparison where they differ.
Rows written before the protocol was recorded (NULL) are reported as "not recorded" and not
held against the other side.
"""

from __future__ import annotations

from ..errors import RefbenchError
from ..store import Store

__all__ = ["SAMPLE_FIELDS", "check_protocol", "protocol_lines"]

SAMPLE_FIELDS = ("sampler", "num_steps", "guidance_scale", "height", "width", "prompt_set_sha256")

# The samples of RUN on SET whose (prompt, seed) the other run also has: the ones a win rate pairs.
_PAIRED = """
SELECT r.* FROM samples r
JOIN samples o ON o.prompt_set = r.prompt_set AND o.prompt = r.prompt AND o.seed = r.seed
WHERE r.run = ? AND o.run = ? AND r.prompt_set = ?
"""


def _sample_protocol(store: Store, run: str, other: str, prompt_set: str) -> dict:
    frame = store.query(_PAIRED, [run, other, prompt_set])
    protocol = {}
    for field in SAMPLE_FIELDS:
        values = sorted({_plain(v) for v in frame[field].dropna().tolist()}, key=str)
        if len(values) > 1:
            raise RefbenchError(
                f"the samples of {run} on {prompt_set} were made under more than one protocol "
                f"({field}: {', '.join(map(str, values))}); regenerate them into one set"
            )
        protocol[field] = values[0] if values else None
    protocol["seeds"] = sorted(set(frame["seed"].tolist()))
    return protocol


def _plain(value):
    """numpy / pandas scalars as Python values (so 50 and 50.0 from two columns compare, and print, alike)."""
    return value.item() if hasattr(value, "item") else value


def _score_source(store: Store, run: str, other: str, prompt_set: str, metric: str) -> tuple | None:
    frame = store.query(
        f"SELECT DISTINCT s.source, s.weights_sha256 FROM scores s JOIN ({_PAIRED}) p USING (sample_id) "
        "WHERE s.metric = ?",
        [run, other, prompt_set, metric],
    )
    known = {(a, b) for a, b in frame.dropna(subset=["weights_sha256"]).itertuples(index=False, name=None)}
    if len(known) > 1:
        shown = ", ".join(f"{a} ({str(b)[:12]})" for a, b in sorted(known))
        raise RefbenchError(f"the {metric} scores of {run} come from more than one checkpoint ({shown}); rescore them")
    return next(iter(known), None)


def check_protocol(store: Store, run: str, baseline: str, prompt_set: str, metrics: list[str]) -> dict:
    """The protocol both sides share, or a RefbenchError naming the first difference."""
    mine, theirs = (
        _sample_protocol(store, run, baseline, prompt_set),
        _sample_protocol(store, baseline, run, prompt_set),
    )
    for field in SAMPLE_FIELDS:
        a, b = mine[field], theirs[field]
        if a is not None and b is not None and a != b:
            raise RefbenchError(
                f"{run} and {baseline} were sampled under different protocols on {prompt_set}: "
                f"{field} {_short(a)} vs {_short(b)}; regenerate one of them with the other's settings"
            )
    protocol = {field: mine[field] if mine[field] is not None else theirs[field] for field in SAMPLE_FIELDS}
    protocol["seeds"] = mine["seeds"]
    sources = {}
    for metric in metrics:
        a, b = (
            _score_source(store, run, baseline, prompt_set, metric),
            _score_source(store, baseline, run, prompt_set, metric),
        )
        if a is not None and b is not None and a != b:
            raise RefbenchError(
                f"{metric} scores of {run} and {baseline} come from different checkpoints: "
                f"{a[0]} ({a[1][:12]}) vs {b[0]} ({b[1][:12]}); rescore one of them"
            )
        sources[metric] = a or b
    protocol["scores"] = sources
    protocol["unets"] = {name: _unet(store, name, prompt_set) for name in (run, baseline)}
    return protocol


def _unet(store: Store, run: str, prompt_set: str) -> tuple | None:
    """(source, sha256) of the released UNet (``generate --unet``) a name's samples came from, if any."""
    frame = store.query(
        "SELECT DISTINCT denoiser_source, denoiser_sha256 FROM samples WHERE run = ? AND prompt_set = ? "
        "AND denoiser_source IS NOT NULL",
        [run, prompt_set],
    )
    return tuple(frame.iloc[0]) if len(frame) else None


def _short(value) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 else text  # a sha256 is named by its first 12 hex digits


def protocol_lines(protocol: dict, prompt_set: str) -> list[str]:
    """What a win-rate table prints above itself."""

    def shown(field):
        value = protocol.get(field)
        return "not recorded" if value is None else _short(value)

    seeds = protocol.get("seeds") or []
    lines = [
        f"protocol: {shown('sampler')}, {shown('num_steps')} steps, guidance {shown('guidance_scale')}, "
        f"{shown('width')}x{shown('height')} px, prompt set {prompt_set} (sha256 {shown('prompt_set_sha256')}), "
        f"evaluation seeds {', '.join(map(str, seeds)) if seeds else '-'}"
    ]
    for name, unet in protocol.get("unets", {}).items():
        if unet:
            lines.append(f"  {name}: UNet {unet[0]} (sha256 {str(unet[1])[:12]})")
    for metric, source in protocol.get("scores", {}).items():
        lines.append(f"  {metric}: " + (f"{source[0]} (sha256 {source[1][:12]})" if source else "source not recorded"))
    return lines
