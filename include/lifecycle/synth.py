"""Seeded generator of realistic card-transaction data with a late chargeback feed.

The generator writes two Hive-style partitioned parquet datasets under ``root``::

    <root>/transactions/ds=YYYY-MM-DD/part-0.parquet
    <root>/chargebacks/ds=YYYY-MM-DD/part-0.parquet

``transactions`` holds one partition per transaction day.  ``chargebacks`` holds
one partition per *report* day: every fraudulent transaction gets exactly one
chargeback reported 1 to 30 days after the transaction, and chargebacks whose
report date is on or after ``end`` are not written (labels arrive late).

Design notes
------------
* A fixed population of cards and merchants is derived from ``seed`` (and the
  population sizes).  Every card has a home country, a spending level, an
  activity level, a set of usual merchants and an occasional travel week.
* Each transaction day uses its own RNG derived from ``(seed, day)``, so a
  transaction partition is identical whatever window it was generated in, and a
  window can be extended day by day (:func:`ensure`, ``--incremental``): the
  demo data of ``make run`` / ``make up`` reaches the current date.
* Fraud comes in three flavours that mostly need per-card history to detect:
  compromised-card bursts, card testing, and a small set of risky merchants
  that attract both.  Legit traffic also has night, foreign, ecom and large
  transactions so that no single raw field is decisive.
* A small share of defective rows (non-positive amount, unknown channel, null
  merchant, exact duplicates) exercises the ETL quarantine; they are never fraud.

This module is pure numpy/pandas/pyarrow and must never import airflow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "CHARGEBACK_SCHEMA",
    "TRANSACTION_SCHEMA",
    "Population",
    "STAMP",
    "default_n_cards",
    "demo_end",
    "ensure",
    "generate",
    "main",
    "make_population",
]

# --------------------------------------------------------------------------- #
# Static reference data
# --------------------------------------------------------------------------- #

TRANSACTION_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("card_number", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("merchant_category", pa.string()),
        pa.field("amount", pa.float64()),
        pa.field("channel", pa.string()),
        pa.field("country", pa.string()),
    ]
)
"""Arrow schema of a transactions partition (column order is part of the contract)."""

CHARGEBACK_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("reported_at", pa.timestamp("us", tz="UTC")),
        pa.field("reason", pa.string()),
    ]
)
"""Arrow schema of a chargebacks partition."""

CHANNELS: tuple[str, ...] = ("pos", "ecom", "contactless", "atm")
"""Valid channels.  Defective rows use :data:`_BAD_CHANNEL`, which is not in here."""
_BAD_CHANNEL = "fax"
_CH_POS, _CH_ECOM, _CH_CONTACTLESS, _CH_ATM, _CH_BAD = range(5)

# name, share of merchants, median amount (EUR), log-sigma,
# channel probabilities (pos, ecom, contactless, atm)
_CATEGORY_TABLE: tuple[tuple[str, float, float, float, tuple[float, float, float, float]], ...] = (
    ("grocery", 0.15, 32.0, 0.70, (0.40, 0.05, 0.53, 0.02)),
    ("fuel", 0.08, 55.0, 0.40, (0.60, 0.00, 0.38, 0.02)),
    ("restaurants", 0.17, 28.0, 0.65, (0.45, 0.10, 0.45, 0.00)),
    ("travel", 0.05, 240.0, 0.90, (0.15, 0.80, 0.05, 0.00)),
    ("electronics", 0.06, 160.0, 0.95, (0.35, 0.50, 0.15, 0.00)),
    ("online_retail", 0.14, 45.0, 0.90, (0.00, 1.00, 0.00, 0.00)),
    ("gambling", 0.02, 40.0, 1.00, (0.10, 0.85, 0.00, 0.05)),
    ("digital_goods", 0.07, 9.0, 0.80, (0.00, 1.00, 0.00, 0.00)),
    ("jewelry", 0.02, 280.0, 0.90, (0.70, 0.20, 0.10, 0.00)),
    ("pharmacy", 0.06, 19.0, 0.70, (0.40, 0.10, 0.50, 0.00)),
    ("transport", 0.10, 4.0, 0.80, (0.20, 0.25, 0.50, 0.05)),
    ("utilities", 0.08, 80.0, 0.50, (0.25, 0.70, 0.00, 0.05)),
)
CATEGORIES: tuple[str, ...] = tuple(row[0] for row in _CATEGORY_TABLE)
"""The merchant categories, in code order."""
_CAT_SHARE = np.array([row[1] for row in _CATEGORY_TABLE])
_CAT_MU = np.log(np.array([row[2] for row in _CATEGORY_TABLE]))
_CAT_SIGMA = np.array([row[3] for row in _CATEGORY_TABLE])
_CAT_CHANNEL_CDF = np.cumsum(np.array([row[4] for row in _CATEGORY_TABLE]), axis=1)
_CAT_CHANNEL_CDF[:, -1] = 1.0
_CAT_INDEX = {name: i for i, name in enumerate(CATEGORIES)}
# categories fraudsters cash out in (bursts and the final card-testing hit)
_FRAUD_CATS = ("electronics", "jewelry", "digital_goods", "travel", "online_retail", "gambling")
_FRAUD_CAT_WEIGHT = (0.28, 0.14, 0.18, 0.14, 0.18, 0.08)
_TESTING_CATS = ("digital_goods", "online_retail", "gambling")

# Countries: index 0 is the dominant home country.
_COUNTRIES: tuple[str, ...] = (
    "DE", "AT", "NL", "FR", "PL", "IT", "ES", "BE", "CH", "DK", "CZ",
    "GB", "US", "HR", "GR", "PT", "TR", "TH", "RO", "BR", "NG", "UA", "CN", "LT",
)  # fmt: skip
_C = {c: i for i, c in enumerate(_COUNTRIES)}
_HOME_COUNTRIES = np.array([_C[c] for c in ("DE", "AT", "NL", "FR", "PL", "IT", "ES", "BE", "CH", "DK", "CZ")])
_HOME_WEIGHTS = np.array([0.62, 0.08, 0.06, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02, 0.01, 0.01])
_TRAVEL_COUNTRIES = np.array(
    [_C[c] for c in ("ES", "IT", "FR", "AT", "NL", "GB", "US", "HR", "GR", "PT", "TR", "TH", "DE", "CH", "DK")]
)
_TRAVEL_WEIGHTS = np.array([0.14, 0.12, 0.10, 0.09, 0.06, 0.07, 0.06, 0.07, 0.06, 0.05, 0.05, 0.03, 0.05, 0.03, 0.02])
_FRAUD_COUNTRIES = np.array(
    [_C[c] for c in ("US", "GB", "NL", "RO", "BR", "NG", "UA", "CN", "LT", "FR", "ES", "IT", "PL", "TR")]
)
_FRAUD_COUNTRY_WEIGHTS = np.array([0.15, 0.12, 0.08, 0.09, 0.08, 0.06, 0.07, 0.06, 0.05, 0.06, 0.06, 0.05, 0.04, 0.03])
_TRAVEL_CDF = np.cumsum(_TRAVEL_WEIGHTS) / _TRAVEL_WEIGHTS.sum()
_FRAUD_COUNTRY_CDF = np.cumsum(_FRAUD_COUNTRY_WEIGHTS) / _FRAUD_COUNTRY_WEIGHTS.sum()
_CATEGORY_ARROW = pa.array(list(CATEGORIES), type=pa.string())
_CHANNEL_ARROW = pa.array([*CHANNELS, _BAD_CHANNEL], type=pa.string())
_COUNTRY_ARROW = pa.array(list(_COUNTRIES), type=pa.string())

# Legit daily profile (share of transactions starting in each UTC hour).
_HOUR_PROFILE = np.array(
    [0.60, 0.35, 0.20, 0.15, 0.15, 0.30, 0.90, 2.00, 3.20, 4.00, 4.60, 5.20,
     6.20, 6.00, 5.40, 5.20, 5.60, 6.40, 6.80, 6.20, 5.00, 3.60, 2.20, 1.20]
)  # fmt: skip
# "night owl" cards shift a share of their activity into the late evening and night
_NIGHT_PROFILE = np.array(
    [3.0, 2.6, 2.0, 1.5, 1.0, 0.6, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4,
     0.5, 0.5, 0.5, 0.5, 0.6, 0.8, 1.0, 1.4, 2.0, 2.6, 3.0, 3.2]
)  # fmt: skip
_HOUR_CDF = np.cumsum(_HOUR_PROFILE) / _HOUR_PROFILE.sum()
_NIGHT_CDF = np.cumsum(_NIGHT_PROFILE) / _NIGHT_PROFILE.sum()

_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_SECOND
_US_PER_DAY = 24 * _US_PER_HOUR
_EPOCH = dt.date(1970, 1, 1)

# Behavioural knobs ------------------------------------------------------------
_N_PREFERRED = 8  # usual merchants per card
_P_PREFERRED = 0.72  # share of legit, at-home spend going to a usual merchant
_P_TRIP_WEEK = 0.035  # probability a card spends a given ISO week abroad
_P_ABROAD_ON_TRIP = 0.85  # share of a travelling card's transactions made abroad
_P_CROSS_BORDER = 0.008  # baseline share of legit cross-border transactions
_P_NIGHT_OWL = 0.06  # share of cards with a night-heavy profile
_BURST_TX_SHARE = 0.0030  # target share of transactions from compromised-card bursts
_TESTING_TX_SHARE = 0.0012  # target share of transactions from card-testing attacks
_BURST_MEAN_LEN = 6.5  # mean of integers(3, 11)
_TESTING_MEAN_LEN = 5.5  # mean of integers(2, 8) tiny probes + 1 larger hit
_RISKY_MERCHANT_SHARE = 0.015
_P_BURST_AT_RISKY = 0.12
_P_TESTING_AT_RISKY = 0.35

_DEFECT_KINDS = ("bad_amount", "bad_channel", "null_merchant", "duplicate")
_MAX_REPORT_DAYS = 30  # a chargeback is reported 1 to 30 days after its transaction


# --------------------------------------------------------------------------- #
# Population
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Population:
    """Fixed population of cards and merchants derived from a seed.

    Arrays are indexed by card / merchant position.  ``card_numbers`` and
    ``merchant_ids`` are pyarrow string arrays so rows can be gathered with
    :func:`pyarrow.compute.take` without per-row Python work.
    """

    seed: int
    card_numbers: pa.Array
    card_home: np.ndarray  # int, index into the country list
    card_level: np.ndarray  # float, spending multiplier
    card_cdf: np.ndarray  # float, cumulative activity weights
    card_night_owl: np.ndarray  # bool
    card_preferred: np.ndarray  # int (n_cards, _N_PREFERRED) merchant indices
    merchant_ids: pa.Array
    merchant_category: np.ndarray  # int, index into CATEGORIES
    merchant_cdf: np.ndarray  # float, cumulative popularity weights
    merchant_risky: np.ndarray  # bool
    fraud_pool: np.ndarray  # merchants in cash-out categories
    fraud_pool_cdf: np.ndarray
    testing_pool: np.ndarray  # merchants in card-testing categories
    risky_idx: np.ndarray  # indices of risky merchants

    @property
    def n_cards(self) -> int:
        """Number of cards."""
        return len(self.card_home)

    @property
    def n_merchants(self) -> int:
        """Number of merchants."""
        return len(self.merchant_category)


def default_n_cards(tx_per_day: int) -> int:
    """Default card population: about 0.2 transactions per card and day."""
    return max(1000, 5 * int(tx_per_day))


def _luhn_card_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return ``n`` unique, Luhn-valid 16-digit card numbers as int64."""
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        m = n - len(out) + 16
        digits = rng.integers(0, 10, size=(m, 15), dtype=np.int64)
        visa = rng.random(m) < 0.6
        digits[:, 0] = np.where(visa, 4, 5)
        digits[:, 1] = np.where(visa, digits[:, 1], rng.integers(1, 6, size=m))
        # Luhn: counting from the right with the check digit at position 0,
        # double every digit at an odd position -> even indices of the payload.
        doubled = digits.copy()
        doubled[:, 0::2] *= 2
        doubled[doubled > 9] -= 9
        check = (10 - doubled.sum(axis=1) % 10) % 10
        powers = 10 ** np.arange(15, 0, -1, dtype=np.int64)
        numbers = digits @ powers + check
        out = np.unique(np.concatenate([out, numbers]))
    # np.unique sorts: shuffle so card order is not numeric order, then trim.
    return rng.permutation(out)[:n]


def make_population(*, seed: int = 7, n_cards: int = 20_000, n_merchants: int = 2000) -> Population:
    """Build the card and merchant population for ``seed``.

    The population depends only on ``(seed, n_cards, n_merchants)``.
    """
    if n_cards < 1 or n_merchants < len(CATEGORIES):
        raise ValueError(f"need n_cards >= 1 and n_merchants >= {len(CATEGORIES)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0, n_cards, n_merchants]))

    # merchants: every category present, Zipf-like popularity
    cats = np.concatenate(
        [np.arange(len(CATEGORIES)), rng.choice(len(CATEGORIES), size=n_merchants - len(CATEGORIES), p=_CAT_SHARE)]
    )
    cats = rng.permutation(cats)
    popularity = rng.permutation(1.0 / np.arange(1, n_merchants + 1) ** 0.8) * rng.lognormal(0.0, 0.3, n_merchants)
    merchant_cdf = np.cumsum(popularity) / popularity.sum()
    width = max(5, len(str(n_merchants - 1)))
    merchant_ids = pa.array([f"m{i:0{width}d}" for i in range(n_merchants)], type=pa.string())

    # risky merchants, mostly where card testing and cash-out happen
    n_risky = max(1, round(_RISKY_MERCHANT_SHARE * n_merchants))
    risky_pref = np.isin(cats, [_CAT_INDEX[c] for c in (*_TESTING_CATS, "electronics")])
    w = np.where(risky_pref, 4.0, 1.0)
    risky_idx = np.sort(rng.choice(n_merchants, size=n_risky, replace=False, p=w / w.sum()))
    merchant_risky = np.zeros(n_merchants, dtype=bool)
    merchant_risky[risky_idx] = True

    fraud_pool = np.flatnonzero(np.isin(cats, [_CAT_INDEX[c] for c in _FRAUD_CATS]))
    cat_w = dict(zip(_FRAUD_CATS, _FRAUD_CAT_WEIGHT, strict=True))
    fp_cat = cats[fraud_pool]
    fp_cat_count = np.bincount(fp_cat, minlength=len(CATEGORIES))
    fp_w = np.array([cat_w[CATEGORIES[c]] for c in fp_cat]) / fp_cat_count[fp_cat] * np.sqrt(popularity[fraud_pool])
    fraud_pool_cdf = np.cumsum(fp_w) / fp_w.sum()
    testing_pool = np.flatnonzero(np.isin(cats, [_CAT_INDEX[c] for c in _TESTING_CATS]))

    # cards
    numbers = _luhn_card_numbers(rng, n_cards)
    card_numbers = pa.array(numbers.astype("U16"), type=pa.string())
    card_home = _HOME_COUNTRIES[rng.choice(len(_HOME_COUNTRIES), size=n_cards, p=_HOME_WEIGHTS)]
    card_level = rng.lognormal(0.0, 0.45, n_cards)
    activity = rng.gamma(1.2, 1.0, n_cards)
    card_cdf = np.cumsum(activity) / activity.sum()
    card_night_owl = rng.random(n_cards) < _P_NIGHT_OWL
    card_preferred = np.searchsorted(merchant_cdf, rng.random((n_cards, _N_PREFERRED)), side="right")
    card_preferred = np.minimum(card_preferred, n_merchants - 1)

    return Population(
        seed=int(seed),
        card_numbers=card_numbers,
        card_home=card_home,
        card_level=card_level,
        card_cdf=card_cdf,
        card_night_owl=card_night_owl,
        card_preferred=card_preferred,
        merchant_ids=merchant_ids,
        merchant_category=cats,
        merchant_cdf=merchant_cdf,
        merchant_risky=merchant_risky,
        fraud_pool=fraud_pool,
        fraud_pool_cdf=fraud_pool_cdf,
        testing_pool=testing_pool,
        risky_idx=risky_idx,
    )


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: indices for uniforms ``u`` under cumulative weights ``cdf``."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser (counter-based hashing, uint64 in/out)."""
    x = x.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_uniform(seed: int, salt: int, a: np.ndarray, b: int) -> np.ndarray:
    """Deterministic uniforms in [0, 1) from ``(seed, salt, a, b)`` without RNG state."""
    base = _splitmix64(np.array([(int(seed) & 0xFFFFFFFF) << 20 | (salt & 0xFFFFF)], dtype=np.uint64))
    base = _splitmix64(base ^ np.uint64(b & 0xFFFFFFFFFFFF))
    h = _splitmix64(a.astype(np.uint64) ^ base)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _amounts(rng: np.random.Generator, cat: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """Log-normal amounts by category, times ``scale``, rounded to cents, >= 0.30."""
    z = rng.standard_normal(len(cat))
    amt = np.exp(_CAT_MU[cat] + _CAT_SIGMA[cat] * z) * scale
    return np.round(np.maximum(amt, 0.30), 2)


def _channels_for(rng: np.random.Generator, cat: np.ndarray) -> np.ndarray:
    """Sample a channel code for each category code."""
    u = rng.random(len(cat))
    return (u[:, None] >= _CAT_CHANNEL_CDF[cat][:, :-1]).sum(axis=1)


def _group_offsets(rng: np.random.Generator, sizes: np.ndarray, mean_gap_us: float) -> np.ndarray:
    """Cumulative exponential gaps within each group (first event of a group at 0)."""
    n = int(sizes.sum())
    gaps = rng.exponential(mean_gap_us, n)
    starts = np.cumsum(sizes) - sizes
    gaps[starts[sizes > 0]] = 0.0
    csum = np.cumsum(gaps)
    return (csum - np.repeat(csum[starts], sizes)).astype(np.int64)


def _atomic_write(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` via a hidden temp file in the same dir + os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp, compression="snappy")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------- #
# One day
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Day:
    table: pa.Table
    fraud_ids: pa.Array | pa.ChunkedArray
    fraud_ts_us: np.ndarray
    n_fraud: int
    n_defects: int


def _fraud_events(rng: np.random.Generator, pop: Population, day_us: int, tx_per_day: int) -> dict[str, np.ndarray]:
    """Generate the day's fraud rows (bursts + card testing).

    The number of attacks is Poisson with a mean chosen so that fraud rows make
    up about ``_BURST_TX_SHARE + _TESTING_TX_SHARE`` of ``tx_per_day``.  At most
    half of the day's rows are fraud (only matters for toy sizes).
    """
    budget = tx_per_day // 2
    lam_b = tx_per_day * _BURST_TX_SHARE / _BURST_MEAN_LEN
    lam_t = tx_per_day * _TESTING_TX_SHARE / _TESTING_MEAN_LEN
    n_b = int(rng.poisson(lam_b))
    n_t = int(rng.poisson(lam_t))

    # ---- compromised-card bursts ----------------------------------------- #
    b_len = rng.integers(3, 11, size=n_b)
    b_card = _pick(pop.card_cdf, rng.random(n_b))
    night = rng.random(n_b) < 0.35
    b_start = np.where(
        night,
        rng.integers(0, 6 * _US_PER_HOUR, size=n_b),
        rng.integers(6 * _US_PER_HOUR, _US_PER_DAY, size=n_b),
    )
    b_foreign = rng.random(n_b) < 0.70
    b_country = np.where(
        b_foreign,
        _FRAUD_COUNTRIES[_pick(_FRAUD_COUNTRY_CDF, rng.random(n_b))],
        pop.card_home[b_card],
    )
    b_off = _group_offsets(rng, b_len, 22 * 60 * _US_PER_SECOND)
    nb = int(b_len.sum())
    b_span = np.zeros(n_b, dtype=np.int64)
    if nb:
        last = np.cumsum(b_len) - 1
        b_span = b_off[last]
    b_start = np.minimum(b_start, _US_PER_DAY - 1 - b_span)
    b_start = np.maximum(b_start, 0)
    b_ts = np.repeat(b_start, b_len) + b_off
    b_ts = np.minimum(b_ts, _US_PER_DAY - 1)
    b_merch = np.where(
        rng.random(nb) < _P_BURST_AT_RISKY,
        pop.risky_idx[rng.integers(0, len(pop.risky_idx), size=nb)],
        pop.fraud_pool[_pick(pop.fraud_pool_cdf, rng.random(nb))],
    )
    b_cat = pop.merchant_category[b_merch]
    b_amt = _amounts(rng, b_cat, rng.lognormal(np.log(2.2), 0.45, nb))
    u = rng.random(nb)
    b_chan = np.select([u < 0.62, u < 0.80, u < 0.95], [_CH_ECOM, _CH_CONTACTLESS, _CH_POS], default=_CH_ATM).astype(
        np.int64
    )
    b_card_rows = np.repeat(b_card, b_len)
    b_country_rows = np.repeat(b_country, b_len)

    # ---- card testing: tiny probes, then one larger hit ------------------- #
    t_probes = rng.integers(2, 8, size=n_t)
    t_len = t_probes + 1
    t_card = _pick(pop.card_cdf, rng.random(n_t))
    t_start = rng.integers(0, _US_PER_DAY, size=n_t)
    t_foreign = rng.random(n_t) < 0.5
    t_country = np.where(
        t_foreign,
        _FRAUD_COUNTRIES[_pick(_FRAUD_COUNTRY_CDF, rng.random(n_t))],
        pop.card_home[t_card],
    )
    t_probe_merch = np.where(
        rng.random(n_t) < _P_TESTING_AT_RISKY,
        pop.risky_idx[rng.integers(0, len(pop.risky_idx), size=n_t)],
        pop.testing_pool[rng.integers(0, len(pop.testing_pool), size=n_t)],
    )
    t_hit_merch = pop.fraud_pool[_pick(pop.fraud_pool_cdf, rng.random(n_t))]
    nt = int(t_len.sum())
    t_off = _group_offsets(rng, t_len, 70 * _US_PER_SECOND)
    t_is_hit = np.zeros(nt, dtype=bool)
    if nt:
        t_is_hit[np.cumsum(t_len) - 1] = True
        # the larger hit comes a few minutes after the last probe
        extra = rng.exponential(4 * 60 * _US_PER_SECOND, n_t).astype(np.int64)
        t_off = t_off + np.where(t_is_hit, np.repeat(extra, t_len), 0)
        t_span = t_off[np.cumsum(t_len) - 1]
        t_start = np.maximum(np.minimum(t_start, _US_PER_DAY - 1 - t_span), 0)
    t_ts = np.minimum(np.repeat(t_start, t_len) + t_off, _US_PER_DAY - 1)
    t_merch = np.where(t_is_hit, np.repeat(t_hit_merch, t_len), np.repeat(t_probe_merch, t_len))
    t_cat = pop.merchant_category[t_merch]
    tiny = np.round(rng.uniform(0.5, 3.0, nt), 2)
    big = _amounts(rng, t_cat, rng.lognormal(np.log(2.0), 0.4, nt))
    t_amt = np.where(t_is_hit, big, tiny)
    t_chan = np.where(rng.random(nt) < 0.95, _CH_ECOM, _CH_CONTACTLESS).astype(np.int64)

    rows = {
        "tod": np.concatenate([b_ts, t_ts]).astype(np.int64),
        "card": np.concatenate([b_card_rows, np.repeat(t_card, t_len)]),
        "merchant": np.concatenate([b_merch, t_merch]),
        "amount": np.concatenate([b_amt, t_amt]),
        "channel": np.concatenate([b_chan, t_chan]),
        "country": np.concatenate([b_country_rows, np.repeat(t_country, t_len)]),
    }
    if len(rows["tod"]) > budget:  # toy tx_per_day only
        rows = {k: v[:budget] for k, v in rows.items()}
    rows["tod"] = rows["tod"] + day_us
    return rows


def _skimming_events(rng: np.random.Generator, pop: Population, day_us: int, tx_per_day: int) -> dict[str, np.ndarray]:
    """The drift scenario's new fraud pattern: cards skimmed at fuel pumps, cashed out in person at
    home - one or two contactless payments at fuel stations, daytime, at about four times a normal
    fill-up. None of the old pattern's signs (abroad, at night, online, risky merchants, bursts)
    is there, so a model trained before the pattern misses it; the pattern is learnable
    (category, channel, amount) once its labels arrive. About as many fraud rows as before."""
    budget = tx_per_day // 2
    n_cards = int(rng.poisson(tx_per_day * (_BURST_TX_SHARE + _TESTING_TX_SHARE) / 1.5))
    length = rng.integers(1, 3, size=n_cards)
    n = int(length.sum())
    card = np.repeat(_pick(pop.card_cdf, rng.random(n_cards)), length)
    start = np.repeat(rng.integers(8 * _US_PER_HOUR, 20 * _US_PER_HOUR, size=n_cards), length)
    tod = np.minimum(start + _group_offsets(rng, length, 15 * 60 * _US_PER_SECOND), _US_PER_DAY - 1)
    fuel = np.flatnonzero(pop.merchant_category == _CAT_INDEX["fuel"])
    merchant = fuel[rng.integers(0, len(fuel), size=n)]
    rows = {
        "tod": tod.astype(np.int64),
        "card": card,
        "merchant": merchant,
        "amount": _amounts(rng, pop.merchant_category[merchant], rng.lognormal(np.log(4.0), 0.3, n)),
        "channel": np.full(n, _CH_CONTACTLESS, dtype=np.int64),
        "country": pop.card_home[card],
    }
    if n > budget:
        rows = {k: v[:budget] for k, v in rows.items()}
    rows["tod"] = rows["tod"] + day_us
    return rows


def _legit_rows(rng: np.random.Generator, pop: Population, day: dt.date, day_us: int, n: int) -> dict[str, np.ndarray]:
    """Generate ``n`` legitimate rows for ``day``."""
    card = _pick(pop.card_cdf, rng.random(n))

    # travel weeks are a property of (card, ISO week): consistent across days
    iso_year, iso_week, _ = day.isocalendar()
    week_key = iso_year * 100 + iso_week
    on_trip = _hash_uniform(pop.seed, 1, card, week_key) < _P_TRIP_WEEK
    dest_idx = _pick(_TRAVEL_CDF, _hash_uniform(pop.seed, 2, card, week_key))
    home = pop.card_home[card]
    trip_dest = _TRAVEL_COUNTRIES[dest_idx]
    # never "travel" to the home country: take the next destination instead
    trip_dest = np.where(trip_dest == home, _TRAVEL_COUNTRIES[(dest_idx + 1) % len(_TRAVEL_COUNTRIES)], trip_dest)
    abroad_trip = on_trip & (rng.random(n) < _P_ABROAD_ON_TRIP)
    cross_border = ~abroad_trip & (rng.random(n) < _P_CROSS_BORDER)
    cb_country = _TRAVEL_COUNTRIES[_pick(_TRAVEL_CDF, rng.random(n))]
    country = np.where(abroad_trip, trip_dest, np.where(cross_border, cb_country, home))

    preferred = ~abroad_trip & (rng.random(n) < _P_PREFERRED)
    slot = np.minimum((rng.random(n) ** 2 * _N_PREFERRED).astype(np.int64), _N_PREFERRED - 1)
    other = _pick(pop.merchant_cdf, rng.random(n))
    merchant = np.where(preferred, pop.card_preferred[card, slot], other)
    cat = pop.merchant_category[merchant]

    amount = _amounts(rng, cat, pop.card_level[card] * np.where(abroad_trip, 1.3, 1.0))
    channel = _channels_for(rng, cat)

    owl = pop.card_night_owl[card] & (rng.random(n) < 0.5)
    u = rng.random(n)
    hour = np.where(owl, _pick(_NIGHT_CDF, u), _pick(_HOUR_CDF, u))
    tod = hour.astype(np.int64) * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, size=n)
    return {
        "tod": tod + day_us,
        "card": card,
        "merchant": merchant,
        "amount": amount,
        "channel": channel,
        "country": country,
    }


def _generate_day(
    pop: Population, day: dt.date, *, tx_per_day: int, seed: int, defect_rate: float, new_pattern: bool = False
) -> _Day:
    """Generate one transaction partition (as an arrow table) plus its fraud rows; ``new_pattern``:
    the drift scenario's fraud (:func:`_skimming_events`) instead of the usual one."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, day.toordinal()]))
    day_us = (day - _EPOCH).days * _US_PER_DAY

    fraud = (_skimming_events if new_pattern else _fraud_events)(rng, pop, day_us, tx_per_day)
    n_fraud = len(fraud["tod"])

    # defects: decide how many and of which kind before sizing the legit block
    n_def = int(rng.binomial(tx_per_day, defect_rate)) if defect_rate > 0 else 0
    kinds = rng.integers(0, len(_DEFECT_KINDS), size=n_def)
    n_dup = int((kinds == 3).sum())
    if 2 * n_def > tx_per_day - n_fraud:  # toy sizes: keep defects a minority of legit rows
        kinds = kinds[: (tx_per_day - n_fraud) // 2]
        n_dup = int((kinds == 3).sum())
    n_legit = tx_per_day - n_fraud - n_dup
    legit = _legit_rows(rng, pop, day, day_us, n_legit)

    cols = {k: np.concatenate([legit[k], fraud[k]]) for k in legit}
    n_base = n_legit + n_fraud
    is_fraud = np.zeros(n_base, dtype=bool)
    is_fraud[n_legit:] = True
    merchant_null = np.zeros(n_base, dtype=bool)

    # mutate distinct legit rows; duplicates copy other distinct legit rows
    victims = rng.choice(n_legit, size=len(kinds), replace=False) if len(kinds) else np.empty(0, np.int64)
    bad_amt = victims[kinds == 0]
    cols["amount"][bad_amt] = np.where(rng.random(len(bad_amt)) < 0.5, 0.0, -cols["amount"][bad_amt])
    cols["channel"][victims[kinds == 1]] = _CH_BAD
    merchant_null[victims[kinds == 2]] = True
    dup_src = victims[kinds == 3]

    # order by time, assign ids, then append exact duplicates next to their source
    order = np.lexsort((np.arange(n_base), cols["tod"]))
    rank = np.empty(n_base, dtype=np.int64)
    rank[order] = np.arange(n_base)
    final = np.sort(np.concatenate([rank, rank[dup_src]]), kind="stable")
    take = order[final]  # row positions (into cols) in output order
    seq = final  # id number = time rank, repeated for duplicates

    width = max(6, len(str(max(n_base - 1, 0))))
    prefix = f"tx{day:%Y%m%d}-"
    seq_str = np.char.zfill(seq.astype(str), width)
    tx_ids = pa.array(np.char.add(prefix, seq_str), type=pa.string())

    merchant_idx = pa.array(cols["merchant"][take], mask=merchant_null[take])
    table = pa.Table.from_arrays(
        [
            tx_ids,
            pa.array(cols["tod"][take], type=pa.timestamp("us", tz="UTC")),
            pop.card_numbers.take(pa.array(cols["card"][take])),
            pop.merchant_ids.take(merchant_idx),
            _CATEGORY_ARROW.take(pa.array(pop.merchant_category[cols["merchant"][take]])),
            pa.array(cols["amount"][take], type=pa.float64()),
            _CHANNEL_ARROW.take(pa.array(cols["channel"][take])),
            _COUNTRY_ARROW.take(pa.array(cols["country"][take])),
        ],
        schema=TRANSACTION_SCHEMA,
    )

    # fraud rows are never duplicated or mutated, so each appears once in `take`
    fraud_out = is_fraud[take]
    return _Day(
        table=table,
        fraud_ids=tx_ids.filter(pa.array(fraud_out)),
        fraud_ts_us=cols["tod"][take][fraud_out],
        n_fraud=n_fraud,
        n_defects=len(kinds),
    )


# --------------------------------------------------------------------------- #
# Public entry point
# --------------------------------------------------------------------------- #


def _chargeback_delay_us(seed: int, day: dt.date, n: int) -> np.ndarray:
    """Report delays in microseconds: 1 to 30 days, median ~5, mostly 2-10 days."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, day.toordinal()]))
    days = np.clip(rng.lognormal(np.log(5.0), 0.55, n), 1.0, float(_MAX_REPORT_DAYS))
    return (days * _US_PER_DAY).astype(np.int64)


def generate(
    root: str | os.PathLike,
    *,
    end: dt.date,
    days: int,
    tx_per_day: int = 4000,
    seed: int = 7,
    n_cards: int | None = None,
    n_merchants: int = 2000,
    defect_rate: float = 0.0005,
    log: Callable[[str], None] | None = None,
    skip_before: dt.date | None = None,
    drift_from: dt.date | None = None,
) -> dict:
    """Generate ``days`` daily partitions of transactions ending at ``end - 1``.

    Args:
        root: landing directory; ``transactions/`` and ``chargebacks/`` go below it.
        end: exclusive end day; transaction days are ``[end - days, end)``.
        days: number of daily transaction partitions.
        tx_per_day: rows per transaction partition (including injected duplicates).
        seed: master seed; the same arguments give byte-identical files.
        n_cards: card population size (default :func:`default_n_cards`).
        n_merchants: merchant population size.
        defect_rate: share of deliberately defective rows (0 disables them).
        log: optional progress callback.
        skip_before: extend an existing landing zone: the partitions of the days before
            this one were written by a call with the same arguments but an earlier ``end``
            (equal to ``skip_before``) and are left alone.  Only the days in
            ``[skip_before, end)`` are written: their transactions, and the chargebacks
            reported on them (including those of older transactions that fell due); the
            30 days before ``skip_before`` are generated again in memory for that.
        drift_from: the drift scenario: from this day on, fraud follows a new pattern (cards
            skimmed at fuel pumps, see :func:`_skimming_events`) that a model trained before it
            misses; None (the default) leaves every day as it was.

    Returns:
        Summary dict with ``days``, ``rows``, ``frauds``, ``fraud_rate``,
        ``chargebacks_written``, ``defects``, ``start`` and ``end`` (ISO dates) of the
        partitions written by this call (``start`` is ``skip_before`` when extending).

    A chargeback partition is written for every report day in ``[start, end)``
    (possibly empty).  Chargebacks reported on or after ``end`` are dropped:
    they have not arrived yet.  Chargeback partitions only cover transactions of
    this window, so the first days' partitions are sparse.  Extending a window
    gives the same files as generating the longer window at once.
    """
    if isinstance(end, dt.datetime):
        end = end.date()
    if days < 1:
        raise ValueError("days must be >= 1")
    if tx_per_day < 1:
        raise ValueError("tx_per_day must be >= 1")
    if not 0.0 <= defect_rate < 0.5:
        raise ValueError("defect_rate must be in [0, 0.5)")
    emit = log or (lambda _msg: None)
    root = Path(root)
    start = end - dt.timedelta(days=days)
    pop = make_population(
        seed=seed,
        n_cards=n_cards if n_cards is not None else default_n_cards(tx_per_day),
        n_merchants=n_merchants,
    )

    # Days before `first` cannot have a chargeback reported on or after `write_from` (delays are
    # at most 30 days), so an extension does not need them; days in [first, write_from) are
    # generated only for their fraud rows.
    write_from = start if skip_before is None else min(max(start, skip_before), end)
    first = max(start, write_from - dt.timedelta(days=_MAX_REPORT_DAYS + 1))
    n_write = (end - write_from).days
    rows = frauds = defects = written = 0
    cb_ids: list[pa.Array | pa.ChunkedArray] = []
    cb_reported: list[np.ndarray] = []
    for i in range((first - start).days, days):
        day = start + dt.timedelta(days=i)
        out = _generate_day(
            pop,
            day,
            tx_per_day=tx_per_day,
            seed=seed,
            defect_rate=defect_rate,
            new_pattern=drift_from is not None and day >= drift_from,
        )
        cb_ids.append(out.fraud_ids)
        cb_reported.append(out.fraud_ts_us + _chargeback_delay_us(seed, day, out.n_fraud))
        if day < write_from:
            continue
        _atomic_write(out.table, root / "transactions" / f"ds={day.isoformat()}" / "part-0.parquet")
        written += 1
        rows += out.table.num_rows
        frauds += out.n_fraud
        defects += out.n_defects
        if written % 10 == 0 or written == n_write:
            emit(f"wrote {written}/{n_write} partitions, {rows} rows")

    # pyarrow converts a large numpy string array in chunks (a ChunkedArray): here a day of about
    # 0.9M transactions or more (a 28-day window of 26M+); concat_arrays takes plain arrays only
    chunks = [c for a in cb_ids for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])]
    ids = pa.concat_arrays(chunks) if chunks else pa.array([], type=pa.string())
    reported = np.concatenate(cb_reported) if cb_reported else np.empty(0, np.int64)
    report_day = reported // _US_PER_DAY
    first_report_day = (write_from - _EPOCH).days
    chargebacks_written = 0
    for i in range(n_write):
        sel = np.flatnonzero(report_day == first_report_day + i)
        sel = sel[np.lexsort((sel, reported[sel]))]  # by report time, then transaction order
        table = pa.Table.from_arrays(
            [
                ids.take(pa.array(sel, type=pa.int64())),
                pa.array(reported[sel], type=pa.timestamp("us", tz="UTC")),
                pa.array(["fraud"] * len(sel), type=pa.string()),
            ],
            schema=CHARGEBACK_SCHEMA,
        )
        day = write_from + dt.timedelta(days=i)
        _atomic_write(table, root / "chargebacks" / f"ds={day.isoformat()}" / "part-0.parquet")
        chargebacks_written += len(sel)
    if write_from == start:
        pending = f" ({frauds - chargebacks_written} pending)"
    else:  # an extension also writes chargebacks of older transactions that fell due
        pending = f" (of transactions since {first.isoformat()})"
    emit(f"wrote {n_write} chargeback partitions, {chargebacks_written} chargebacks{pending}")

    return {
        "days": n_write,
        "rows": rows,
        "frauds": frauds,
        "fraud_rate": round(frauds / rows, 6) if rows else 0.0,
        "chargebacks_written": chargebacks_written,
        "defects": defects,
        "start": write_from.isoformat(),
        "end": end.isoformat(),
    }


STAMP = ".generated"
"""Name of the file in the landing directory that records what :func:`ensure` generated there."""


def demo_end(run_date: dt.date, today: dt.date | None = None) -> dt.date:
    """Exclusive end of the demo data: the day after today (UTC), or ``run_date`` if that is later.

    A run at any time today, and the nightly run of tomorrow 02:00, then find full windows.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    return max(run_date, today + dt.timedelta(days=1))


def _code_digest() -> str:
    """Digest of this module's source: a changed generator regenerates the whole landing zone."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def ensure(
    root: str | os.PathLike,
    *,
    start: dt.date,
    end: dt.date,
    tx_per_day: int = 4000,
    seed: int = 7,
    n_cards: int | None = None,
    n_merchants: int = 2000,
    defect_rate: float = 0.0005,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Make ``root`` hold the partitions of ``[start, end)``, generating only what is missing.

    ``<root>/.generated`` (JSON) records the arguments, the generator's digest and the end of
    what is there.  Same arguments and an end at or after ``end``: nothing to do (a cheap
    check).  Same arguments and an earlier end: the window is extended to ``end`` (new days'
    transactions and the chargebacks that fell due, see ``generate(skip_before=...)``).
    Otherwise the whole window is generated again and, when a stamp was there, partitions
    outside the window are removed.  Returns ``{"action": "up_to_date" | "extended" |
    "generated", "start", "end", ...}`` (the summary of what was written).
    """
    if isinstance(start, dt.datetime):
        start = start.date()
    if isinstance(end, dt.datetime):
        end = end.date()
    if end <= start:
        raise ValueError(f"end {end} must be after start {start}")
    root = Path(root)
    stamp_path = root / STAMP
    params = {
        "start": start.isoformat(),
        "tx_per_day": int(tx_per_day),
        "seed": int(seed),
        "n_cards": n_cards,
        "n_merchants": int(n_merchants),
        "defect_rate": float(defect_rate),
        "code": _code_digest(),
    }
    old: dict = {}
    if stamp_path.exists():
        try:
            old = json.loads(stamp_path.read_text() or "{}")
        except ValueError:
            old = {}
        if not isinstance(old, dict):
            old = {}
    same = bool(old) and all(old.get(k) == v for k, v in params.items())
    old_end = dt.date.fromisoformat(old["end"]) if same and isinstance(old.get("end"), str) else None
    if old_end is not None and not all(
        (root / dataset / f"ds={day.isoformat()}" / "part-0.parquet").is_file()
        for dataset in ("transactions", "chargebacks")
        for day in (start, old_end - dt.timedelta(days=1))
    ):
        old_end = None  # partitions were removed since: generate everything again
    if old_end is not None and old_end >= end:
        return {"action": "up_to_date", "start": start.isoformat(), "end": old_end.isoformat()}
    kwargs = {"tx_per_day": tx_per_day, "seed": seed, "n_cards": n_cards, "n_merchants": n_merchants}
    kwargs |= {"defect_rate": defect_rate, "log": log}
    days = (end - start).days
    if old_end is not None and old_end > start:
        summary = generate(root, end=end, days=days, skip_before=old_end, **kwargs)
        action = "extended"
    else:
        if stamp_path.exists():  # our own landing zone from other arguments: drop what is outside the window
            stamp_path.unlink()
            _remove_outside(root, start, end)
        summary = generate(root, end=end, days=days, **kwargs)
        action = "generated"
    tmp = root / f".{STAMP}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({**params, "end": end.isoformat()}, indent=2) + "\n")
    os.replace(tmp, stamp_path)
    return {"action": action, **summary}


def _remove_outside(root: Path, start: dt.date, end: dt.date) -> None:
    """Remove the ``ds=`` partitions of a generated landing zone that lie outside ``[start, end)``."""
    for dataset in ("transactions", "chargebacks"):
        for part in (root / dataset).glob("ds=*"):
            ds = part.name.removeprefix("ds=")
            if not start.isoformat() <= ds < end.isoformat():
                shutil.rmtree(part)


def main(argv: list[str] | None = None) -> int:
    """CLI: generate a landing zone and print the summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m include.lifecycle.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="landing directory")
    parser.add_argument("--end", required=True, type=dt.date.fromisoformat, help="exclusive end day (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--per-day", type=int, default=4000, dest="tx_per_day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n-cards", type=int, default=None)
    parser.add_argument("--n-merchants", type=int, default=2000)
    parser.add_argument("--defect-rate", type=float, default=0.0005)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--to-today",
        action="store_true",
        help="keep the start (--end minus --days) and end the data today (UTC) if that is later than --end",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help=f"record the window in <root>/{STAMP} and generate only what is missing (see ensure())",
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be >= 1")
    start = args.end - dt.timedelta(days=args.days)
    end = demo_end(args.end) if args.to_today else args.end
    kwargs = {
        "tx_per_day": args.tx_per_day,
        "seed": args.seed,
        "n_cards": args.n_cards,
        "n_merchants": args.n_merchants,
        "defect_rate": args.defect_rate,
        "log": None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True)),
    }
    if args.incremental:
        summary = ensure(args.root, start=start, end=end, **kwargs)
    else:
        summary = generate(args.root, end=end, days=(end - start).days, **kwargs)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
