"""A Gaussian fitted to a trained model's codes, so that models with deterministic codes can sample too.

A VAE's codes are drawn towards N(0, I), so sampling draws from it. A plain autoencoder
(``latent_mode: ae``) puts its codes wherever they serve reconstruction: N(0, I) says nothing about
where that is. Ghosh et al. (2020, "From variational to deterministic autoencoders") fit a density to
the codes of the training data after training ("ex-post density estimation") and sample from it. Here
the density is one Gaussian over a whole window's codes, ``[z_bar of bar 1 .. bar NB ; z_segment]``
(D = NB * Zb + Zs), with a low-rank-plus-diagonal covariance (probabilistic PCA):

    cov = F F^T + diag(s^2),   F (D, K): the K leading principal directions scaled by their spread,
                               s (D,): what those K directions leave of each coordinate's variance.

With K = D the covariance is the sample covariance itself. The file is ``code_prior.safetensors`` in the
checkpoint folder (float32 ``mean``, ``factor``, ``residual``; the shape facts in the metadata).

Tags (issue 18). Fitted with the windows' tags (:mod:`midistruct.tags`), the prior also keeps, for each tag, the
mean code of each of its values and the spread of the codes around their own value's mean (the within-value
covariance, again low rank plus diagonal): a :class:`TagGroup`. Sampling with tags draws from

    N(mean + sum_t (mean[t, v_t] - mean),  within-value covariance of the tag whose values spread least)

so ``key=D minor`` draws codes near the D minor windows' codes and no wider than D minor windows spread; several
tags add their offsets (the shifts of a pair not seen together are assumed to add). :meth:`CodePrior.retag` moves
given codes from the value they are nearest to (diagonal LDA) to the value asked for. In the file each group is
``tag.<name>.means`` (V, D), ``.factor``, ``.residual``, its values, counts and meters in the metadata.

A bank of real bar codes. The codes of a deterministic model do not lie on a Gaussian: a bar code drawn from the
Gaussian is often one no real bar has, and the decoder answers it with chords and stray pitches (``folk-16bar``'s
samples kept to one scale at 0.87 of their notes, the data at 0.99, whatever the rank, a full covariance included).
Fitted with ``bank=B``, the prior also keeps B bar codes of real training bars, picked at random, and the tags of
their windows. :meth:`CodePrior.sample` then moves each drawn bar code to the nearest of them (Euclidean): the
Gaussian chooses how the bars go together, the bank gives each bar a code the decoder knows. With tags (the
pipeline adds the sample's meter), only bank bars of windows with those tag values are used (the meter first; a
tag that would leave fewer than ``MIN_BANK`` bars is not applied). In the file: ``bank`` (B, Zb), ``bank_tag.<name>`` (B,) int16 indices into that
tag's values in the metadata (-1: none). docs/RESULTS.md, "Sampling deterministic codes", has what it changes.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from midistruct.errors import MidiStructError
from midistruct.tags import TagError

PRIOR_FILE = "code_prior.safetensors"
_META_KEY = "midistruct_code_prior"
MIN_BANK = 20  # bank bars a tagged sample snaps to at least; a tag value fewer bank bars have is not applied


class PriorError(MidiStructError, ValueError):
    """A code-prior file that cannot be read, or one that does not fit the model."""


def _ppca(centred: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor (D, K) and residual (D,) of the low-rank-plus-diagonal fit to rows ``centred`` (N, D) already
    divided by sqrt(N - 1) (so that ``centred.T @ centred`` is the sample covariance)."""
    _, spread, directions = torch.linalg.svd(centred, full_matrices=False)  # spread (min(N, D),), directions (., D)
    k = min(rank, len(spread))
    factor = directions[:k].T * spread[:k]  # (D, K)
    variance = (centred**2).sum(0)  # (D,) each coordinate's sample variance
    return factor, (variance - (factor**2).sum(1)).clamp(min=0).sqrt()


@dataclass
class TagGroup:
    """One tag's part of the prior: the mean code of each value and the codes' spread around their value's mean."""

    values: list[str]  # (V,)
    means: torch.Tensor  # (V, D)
    counts: list[int]  # (V,) windows of each value it was fitted on
    factor: torch.Tensor  # (D, K) within-value covariance = factor factor^T + diag(residual^2)
    residual: torch.Tensor  # (D,)
    meters: list[dict[str, int]] = field(default_factory=list)  # (V,) windows per meter, for sampling's meter

    @property
    def spread(self) -> float:
        """Total within-value variance (the trace of the covariance)."""
        return float((self.factor**2).sum() + (self.residual**2).sum())

    def index(self, name: str, value: str) -> int:
        if value not in self.values:
            raise TagError(f"tag {name} has no value {value!r} in this model; known: {', '.join(self.values)}")
        return self.values.index(value)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) the likeliest value of each code x (N, D): linear discriminant analysis under the within-value
        covariance (low rank plus diagonal, inverted by Woodbury's identity) with each value's share of the
        windows as its prior."""
        f = self.factor.double()  # (D, K)
        d = self.residual.double() ** 2
        d = d + 1e-3 * d.mean() + 1e-12  # (D,) a floor: a coordinate the factor explains fully still varies
        inner = torch.eye(f.shape[1], dtype=torch.float64) + f.T @ (f / d[:, None])  # (K, K)
        means = self.means.double()  # (V, D)

        def solve(y):  # Sigma^-1 y for rows y (., D)
            scaled = y / d
            return scaled - (torch.linalg.solve(inner, (scaled @ f).T).T @ f.T) / d

        weights = solve(means)  # (V, D)
        bias = -0.5 * (weights * means).sum(1) + torch.log(torch.tensor(self.counts, dtype=torch.float64))
        return (x.double() @ weights.T + bias).argmax(1)


@dataclass
class CodePrior:
    """N(mean, factor factor^T + diag(residual^2)) over ``[z_bar.flatten() ; z_segment]`` of one window."""

    mean: torch.Tensor  # (D,)
    factor: torch.Tensor  # (D, K)
    residual: torch.Tensor  # (D,)
    bars: int  # NB
    bar_dim: int  # Zb (0 for a segment-only model)
    segment_dim: int  # Zs
    windows: int  # how many windows it was fitted on
    tags: dict[str, TagGroup] = field(default_factory=dict)  # fitted with the windows' tags: see the module
    bank: torch.Tensor | None = None  # (B, Zb) real bar codes that sampled bar codes snap to (see the module)
    bank_tags: dict[str, list[str | None]] = field(default_factory=dict)  # (B,) each bank bar's window's tag values
    posterior: bool = False  # the Gaussian is a VAE's aggregate posterior (fitted with its posterior variances)

    @classmethod
    def fit(cls, z_bar: torch.Tensor, z_segment: torch.Tensor, *, rank: int = 128,
            tags: dict[str, list[str | None]] | None = None, tag_rank: int = 16, min_windows: int = 20,
            bank: int = 0, bank_tags: dict[str, list[str | None]] | None = None, seed: int = 0,
            variances: tuple[torch.Tensor, torch.Tensor] | None = None,
            meters: list[str | None] | None = None) -> CodePrior:
        """Fit to W windows' codes: ``z_bar`` (W, NB, Zb), ``z_segment`` (W, Zs); ``rank`` caps K (K <= D, W - 1).

        ``variances`` (of the shapes of ``z_bar``, ``z_segment``): a VAE's posterior variances of the windows, whose
        codes are then its posterior means; the Gaussian is the aggregate posterior, the mixture of the windows'
        posteriors matched in mean and covariance (the means' covariance plus the mean variance on the diagonal,
        added to ``residual``), while the tags and the bank keep the means. A VAE's ELBO under this prior
        (:mod:`midistruct.evaluation.code_length`) is a code length like its ELBO under N(0, I).

        ``tags`` ({name: (W,) value or None}) adds a :class:`TagGroup` per tag, of the values with at least
        ``min_windows`` windows (``tag_rank`` caps its K); a tag with fewer than 2 such values is left out. A
        ``meter`` column, or else ``meters`` ((W,) each window's meter, when meter is not a tag), also gives each
        value's meters (sampling's meter for that value).
        ``bank`` > 0 keeps that many of the W * NB bar codes (all where fewer), drawn without replacement under
        ``seed``, with their windows' values of ``bank_tags`` ({name: (W,) value or None}; default ``tags``), for
        :meth:`sample` to snap to (see the module)."""
        if z_bar.ndim != 3 or z_segment.ndim != 2 or len(z_bar) != len(z_segment):
            raise PriorError(f"codes of mismatched shapes: z_bar {list(z_bar.shape)}, z_segment {list(z_segment.shape)}")
        windows, bars, bar_dim = z_bar.shape
        if windows < 2:
            raise PriorError(f"a prior needs the codes of at least 2 windows, got {windows}")
        if rank < 1:
            raise PriorError(f"rank must be >= 1, got {rank}")
        if bank < 0:
            raise PriorError(f"bank must be >= 0, got {bank}")
        x = torch.cat([z_bar.reshape(windows, -1), z_segment], dim=1).double()  # (W, D)
        mean = x.mean(0)
        factor, residual = _ppca((x - mean) / (windows - 1) ** 0.5, rank)
        if variances is not None:
            if variances[0].shape != z_bar.shape or variances[1].shape != z_segment.shape:
                raise PriorError(f"variances of shapes {list(variances[0].shape)}, {list(variances[1].shape)}; the "
                                 f"codes' are {list(z_bar.shape)}, {list(z_segment.shape)}")
            spread = torch.cat([variances[0].reshape(windows, -1), variances[1]], dim=1).double().mean(0)  # (D,)
            residual = (residual**2 + spread).sqrt()
        groups = {}
        for name, column in (tags or {}).items():
            if len(column) != windows:
                raise PriorError(f"tag {name}: {len(column)} labels for {windows} windows")
            group = _fit_group(x, column, meters=(tags or {}).get("meter", meters), rank=tag_rank,
                               min_windows=min_windows)
            if group is not None:
                groups[name] = group
        prior = cls(mean.float(), factor.float(), residual.float(), bars, bar_dim, z_segment.shape[1], windows, groups,
                    posterior=variances is not None)
        if bank and bar_dim:
            picked = torch.randperm(windows * bars, generator=torch.Generator().manual_seed(seed))[:bank]  # (B,)
            prior.bank = z_bar.reshape(windows * bars, bar_dim)[picked].float().clone()
            recorded = (tags or {}) if bank_tags is None else bank_tags
            for name, column in recorded.items():
                if len(column) != windows:
                    raise PriorError(f"bank tag {name}: {len(column)} labels for {windows} windows")
            prior.bank_tags = {name: [column[int(i) // bars] for i in picked] for name, column in recorded.items()}
        return prior

    @property
    def dim(self) -> int:
        return self.bars * self.bar_dim + self.segment_dim

    def sample(self, n: int, *, scale: float = 1.0, generator: torch.Generator | None = None,
               tags: dict[str, str] | None = None, tag_strength: float = 1.0, snap: bool = True,
               meter: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` windows' codes: ``z_bar`` (n, NB, Zb) and ``z_segment`` (n, Zs) (torch's global generator by
        default). ``scale`` < 1 draws nearer the mean (every deviation times ``scale``: the truncation trick).
        ``tags`` ({name: value}) draws from the codes of windows with those values (see the module), their
        offsets from the overall mean times ``tag_strength`` (> 1 exaggerates them, as guidance does). With a
        bank and ``snap``, each bar code is then the nearest bank bar's of windows with ``tags`` and in ``meter``
        (:meth:`snap`)."""
        if scale < 0:
            raise PriorError(f"scale must be >= 0, got {scale}")
        mean, factor, residual = self.conditional(tags or {}, strength=tag_strength)
        k = factor.shape[1]
        x = mean + scale * (torch.randn(n, k, generator=generator) @ factor.T
                            + torch.randn(n, self.dim, generator=generator) * residual)
        z_bar, z_segment = self.split(x)
        if snap:
            z_bar = self.snap(z_bar, {**(tags or {}), **({"meter": meter} if meter else {})})
        return z_bar, z_segment

    def bank_rows(self, tags: dict[str, str] | None = None) -> torch.Tensor:
        """Indices of the bank bars whose windows have ``tags``' values: the meter first, then each other tag in
        turn, a tag skipped where it would leave fewer than :data:`MIN_BANK` bars (and a tag the bank does not
        record ignored); the whole bank when ``tags`` is empty."""
        if self.bank is None:
            raise PriorError("this code prior keeps no bank of bar codes (fit it with bank > 0)")
        keep = torch.ones(len(self.bank), dtype=torch.bool)
        for name, value in sorted((tags or {}).items(), key=lambda item: item[0] != "meter"):
            if name in self.bank_tags:
                narrower = keep & torch.tensor([v == value for v in self.bank_tags[name]], dtype=torch.bool)
                if int(narrower.sum()) >= MIN_BANK:
                    keep = narrower
        return keep.nonzero()[:, 0]

    def snap(self, z_bar: torch.Tensor, tags: dict[str, str] | None = None) -> torch.Tensor:
        """Bar codes (n, NB, Zb) each replaced by the nearest bank bar's code (of those :meth:`bank_rows` picks
        for ``tags``); as they are without a bank."""
        if self.bank is None or z_bar.numel() == 0:
            return z_bar
        rows = self.bank[self.bank_rows(tags)]  # (B', Zb)
        flat = z_bar.reshape(-1, z_bar.shape[-1])
        return rows[torch.cdist(flat.float(), rows).argmin(1)].reshape(z_bar.shape).to(z_bar.dtype)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat codes (n, D) -> ``z_bar`` (n, NB, Zb), ``z_segment`` (n, Zs)."""
        z_bar = x[:, : self.bars * self.bar_dim].reshape(len(x), self.bars, self.bar_dim)
        return z_bar, x[:, self.bars * self.bar_dim :]

    def check_tags(self, tags: dict[str, str]) -> None:
        """:class:`TagError` unless every tag and value is known, listing the known ones."""
        for name, value in tags.items():
            if name not in self.tags:
                known = ", ".join(sorted(self.tags)) or "none (refit it: `midistruct prior CHECKPOINT`)"
                raise TagError(f"this model's code prior knows no tag {name!r}; its tags: {known}")
            self.tags[name].index(name, value)

    def conditional(self, tags: dict[str, str], *,
                    strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean (D,), factor (D, K) and residual (D,) of the codes given ``tags`` (all of them, when empty),
        the tags' offsets from the overall mean times ``strength``."""
        self.check_tags(tags)
        if not tags:
            return self.mean, self.factor, self.residual
        mean = self.mean.clone()
        for name, value in tags.items():
            group = self.tags[name]
            mean += strength * (group.means[group.index(name, value)] - self.mean)
        tightest = min((self.tags[name] for name in tags), key=lambda g: g.spread)
        return mean, tightest.factor, tightest.residual

    def retag(self, x: torch.Tensor, tags: dict[str, str], *, strength: float = 1.0) -> torch.Tensor:
        """Codes x (n, D) moved, for each tag, from the mean of the value each lies nearest to the mean of
        the value asked for (times ``strength``); a code already nearest that value moves by nothing."""
        self.check_tags(tags)
        out = x.clone()
        for name, value in tags.items():
            group = self.tags[name]
            target = group.means[group.index(name, value)]  # (D,)
            out += strength * (target - group.means[group.nearest(x)])
        return out

    def meter_for(self, tags: dict[str, str]) -> str | None:
        """The meter most windows with these tag values are in (the first tag that knows one); None if none."""
        self.check_tags(tags)
        for name, value in tags.items():
            group = self.tags[name]
            meters = group.meters[group.index(name, value)] if group.meters else {}
            if meters:
                return max(meters, key=meters.get)
        return None

    def meter_counts(self) -> dict[str, int]:
        """Windows per meter among those the prior was fitted on, from the tag group that counted the most of
        them ({} when the prior was fitted without tags, or without meters)."""
        counts = [collections.Counter() for _ in self.tags.values()]
        for total, group in zip(counts, self.tags.values()):
            for meters in group.meters:
                total.update(meters)
        return dict(max(counts, key=lambda c: sum(c.values()), default={}))

    def check(self, *, bars: int, bar_dim: int, segment_dim: int, where: str = "the code prior") -> None:
        """Raise :class:`PriorError` unless the prior describes codes of this shape (a model's window)."""
        if (self.bars, self.bar_dim, self.segment_dim) != (bars, bar_dim, segment_dim):
            raise PriorError(f"{where} is over {self.bars} bar codes of {self.bar_dim} + a segment code of "
                             f"{self.segment_dim}; the model has {bars} x {bar_dim} + {segment_dim}")

    def save(self, path: str | Path, *, half: bool = False) -> Path:
        """Write the prior to ``path`` (.safetensors): float32 tensors, or float16 with ``half`` (as the shipped
        models keep their weights; the codes need no more than its 11 bits)."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {"format": 2, "bars": self.bars, "bar_dim": self.bar_dim, "segment_dim": self.segment_dim,
                "windows": self.windows, "posterior": self.posterior,
                "tags": {name: {"values": g.values, "counts": g.counts, "meters": g.meters} for name, g in self.tags.items()}}
        tensors = {"mean": self.mean, "factor": self.factor, "residual": self.residual}
        for name, group in self.tags.items():
            tensors |= {f"tag.{name}.means": group.means, f"tag.{name}.factor": group.factor,
                        f"tag.{name}.residual": group.residual}
        if self.bank is not None:
            tensors["bank"] = self.bank
        dtype = torch.float16 if half else torch.float32
        tensors = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
        if self.bank is not None:  # each bank bar's tag value as an index into the values in the metadata (-1: none)
            meta["bank_tags"] = {name: sorted({v for v in column if v is not None})
                                 for name, column in self.bank_tags.items()}
            for name, column in self.bank_tags.items():
                index = {v: i for i, v in enumerate(meta["bank_tags"][name])}
                tensors[f"bank_tag.{name}"] = torch.tensor([index.get(v, -1) for v in column], dtype=torch.int16)
        save_file(tensors, str(path), metadata={_META_KEY: json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> CodePrior:
        """Read a prior file; :class:`PriorError` when it is not one or its tensors disagree with its metadata."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(_META_KEY)
                if raw is None:
                    raise PriorError(f"{path}: not a code-prior file (written by `midistruct prior`)")
                meta = json.loads(raw)
                prior = cls(f.get_tensor("mean").float(), f.get_tensor("factor").float(),
                            f.get_tensor("residual").float(), int(meta["bars"]), int(meta["bar_dim"]),
                            int(meta["segment_dim"]), int(meta["windows"]), posterior=bool(meta.get("posterior")))
                for name, info in meta.get("tags", {}).items():  # format 1 files have none
                    prior.tags[name] = TagGroup(list(info["values"]), f.get_tensor(f"tag.{name}.means").float(),
                                                [int(c) for c in info["counts"]],
                                                f.get_tensor(f"tag.{name}.factor").float(),
                                                f.get_tensor(f"tag.{name}.residual").float(),
                                                [dict(m) for m in info.get("meters", [])])
                if "bank" in f.keys():  # fitted with a bank of bar codes (older files have none)
                    prior.bank = f.get_tensor("bank").float()
                    for name, values in meta.get("bank_tags", {}).items():
                        prior.bank_tags[name] = [values[i] if i >= 0 else None
                                                 for i in f.get_tensor(f"bank_tag.{name}").tolist()]
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            if isinstance(err, PriorError):
                raise
            raise PriorError(f"{path}: unreadable code prior ({type(err).__name__}: {err})") from None
        d = prior.dim
        if prior.mean.shape != (d,) or prior.residual.shape != (d,) or prior.factor.ndim != 2 \
                or prior.factor.shape[0] != d:
            raise PriorError(f"{path}: tensors of shapes {list(prior.mean.shape)}, {list(prior.factor.shape)}, "
                             f"{list(prior.residual.shape)} do not fit its {d} dimensions")
        for name, g in prior.tags.items():
            if g.means.shape != (len(g.values), d) or g.factor.ndim != 2 or g.factor.shape[0] != d \
                    or g.residual.shape != (d,) or len(g.counts) != len(g.values):
                raise PriorError(f"{path}: tag {name}'s tensors do not fit its {len(g.values)} values of {d} dimensions")
        if prior.bank is not None and (prior.bank.ndim != 2 or prior.bank.shape[1] != prior.bar_dim
                                       or any(len(v) != len(prior.bank) for v in prior.bank_tags.values())):
            raise PriorError(f"{path}: a bank of shape {list(prior.bank.shape)} does not fit bar codes of "
                             f"{prior.bar_dim} (or its tags do not fit its bars)")
        return prior


def _fit_group(x: torch.Tensor, column: list[str | None], *, meters: list[str | None] | None, rank: int,
               min_windows: int) -> TagGroup | None:
    """The :class:`TagGroup` of one tag over codes x (W, D) (float64), or None with fewer than 2 values of
    ``min_windows`` windows."""
    counts: dict[str, int] = {}
    for value in column:
        if value:
            counts[value] = counts.get(value, 0) + 1
    values = sorted(v for v, c in counts.items() if c >= min_windows)
    if len(values) < 2:
        return None
    rows = {v: [i for i, c in enumerate(column) if c == v] for v in values}
    means = torch.stack([x[rows[v]].mean(0) for v in values])  # (V, D)
    picked = [i for v in values for i in rows[v]]
    centred = torch.cat([x[rows[v]] - means[k] for k, v in enumerate(values)])  # (N, D)
    factor, residual = _ppca(centred / (len(picked) - len(values)) ** 0.5, rank)
    per_meter = []
    for v in values:
        found: dict[str, int] = {}
        for i in rows[v]:
            if meters and meters[i]:
                found[meters[i]] = found.get(meters[i], 0) + 1
        per_meter.append(found)
    return TagGroup(values, means.float(), [len(rows[v]) for v in values], factor.float(), residual.float(), per_meter)


def load_prior(folder: str | Path) -> CodePrior | None:
    """The code prior in a checkpoint folder, or None when it has none."""
    path = Path(folder) / PRIOR_FILE
    return CodePrior.load(path) if path.exists() else None
