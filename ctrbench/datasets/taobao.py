"""``dataset=taobao``: Alibaba's display-ad click logs (Tianchi data set 56) under BARS' TaobaoAd_x1 protocol.

Raw files in ``dataset.root`` under their original names (Tianchi requires a login, so nothing is
downloaded): ``raw_sample.csv`` (user, time_stamp, adgroup_id, pid, nonclk, clk — one impression
per line, 8 days), ``ad_feature.csv`` (adgroup_id, cate_id, campaign_id, customer, brand, price;
brand may be ``NULL``), ``user_profile.csv`` (userid, cms_segid, cms_group_id, final_gender_code,
age_level, pvalue_level, shopping_level, occupation, new_user_class_level — the real header ends in
a space, and pvalue_level/new_user_class_level have empty fields) and ``behavior_log.csv`` (user,
time_stamp, btag ∈ pv/cart/fav/buy, cate, brand; ~700M lines). Header names are matched after
stripping blanks; an empty field or ``NULL`` is a value of its own (``NULL``), as BARS' conversion
fills missing values with one constant.

Protocol (BARS TaobaoAd_x1: reczoo/Datasets ``Taobao/TaobaoAd_x1``, its ``convert_taobaoad_x1.py``
and the FuxiCTR configs of reczoo/BARS ``ranking/ctr/DIN/DIN_taobaoad_x1``):

* test = the impressions of the last day (2017-05-13 in China time, UTC+8), training = the 7
  days before; ``test_days`` changes the number of test days. BARS has no validation split
  (``val_days=0``, the default: the engine then reports the last epoch); ``val_days=1`` moves the
  day before test to validation.
* impressions whose user has no profile line or whose ad has no ad_feature line are dropped and
  counted (BARS: ~5 % of the samples).
* features: the user profile (and ``userid``, as BARS; ``user_feature=false`` drops it), the ad
  (adgroup_id, cate_id, campaign_id, customer, brand, price), the slot ``pid`` and the candidate's
  ``btag`` (a constant, ``pv``: BARS sets it to 1 for every sample); ``price`` is dense,
  ``log(1 + price)`` (``price=raw``: the raw value, as BARS' numeric column).
* behaviour sequences ``cate_his``, ``brand_his``, ``btag_his`` (sharing the embedding tables of
  cate_id, brand and btag, as BARS' ``share_embedding``): the user's behaviours of ``btags`` (default
  all four, as BARS' ``btag_his`` vocabulary of pv/cart/fav/buy) with a time *strictly* before the
  impression's, in time order (equal times keep file order), the last ``max_len`` = 50.
* categorical values seen fewer than ``min_count`` = 10 times in the training rows (for the shared
  cate/brand/btag tables: training candidates plus stored behaviours) map to one ``<OOV>`` row (1);
  row 0 is padding. The GAUC group is the user (BARS: ``group_id`` = userid).

The behaviour log is streamed in record batches (pyarrow CSV): only behaviours of a kept btag, of a
user with impressions and earlier than that user's last impression are kept, spilled to disk in
``shards`` user shards, then each shard is sorted by (user, time) in memory and trimmed to what a
row can read (the ``max_len`` behaviours before the user's first impression and everything after).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctrbench.datasets.cache import ArrayCache, CachedData, cache_root, protocol_options, tmp_prefix
from ctrbench.datasets.rawfiles import DatasetError, require_files
from ctrbench.datasets.sequences import SPLITS, TEST, TRAIN, VAL, split_stats
from ctrbench.schema import DatasetSplits, Field, Schema, Sequences, Split

FORMAT_VERSION = 1
BTAGS = ("pv", "cart", "fav", "buy")
PRICES = ("log", "raw")
NULL = np.int64(np.iinfo(np.int64).min)  # an empty field or NULL in an id column
OOV, FIRST_ID = 1, 2  # row 0 padding, row 1 <OOV>, kept values from row 2 on
CHINA = 8 * 3600  # the logs' days are China days (1494032110 = 2017-05-06 08:55:10, UTC+8)
DAY = 86400
FILES = {
    "raw_sample": ("raw_sample.csv",),
    "ad_feature": ("ad_feature.csv",),
    "user_profile": ("user_profile.csv",),
    "behavior_log": ("behavior_log.csv",),
}
PROFILE = (
    "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level",
    "occupation", "new_user_class_level",
)  # fmt: skip
AD = ("cate_id", "campaign_id", "customer", "brand")
SEQUENCES = (("cate_his", "cate_id"), ("brand_his", "brand"), ("btag_his", "btag"))
_TIME_BITS = 33  # (user, time) keys: user << 33 | time offset


@dataclass
class TaobaoConfig:
    root: str = ""  # folder with raw_sample.csv, ad_feature.csv, user_profile.csv, behavior_log.csv
    max_len: int = 50  # most recent behaviours per row (BARS: 50)
    btags: list[str] = field(default_factory=lambda: list(BTAGS))  # behaviour types in the history
    min_count: int = 10  # rarer categorical values -> <OOV> (BARS: min_category_count=10)
    test_days: int = 1  # last days as test (BARS: 1, 2017-05-13)
    val_days: int = 0  # days before test as validation (BARS: none)
    user_feature: bool = True  # userid as a feature (BARS: yes)
    price: str = "log"  # log = log(1 + price) | raw (BARS)
    shards: int = 0  # user shards the behaviour log is spilled into; 0 = one per ~16M behaviours
    block_mb: int = 16  # bytes per CSV record batch
    cache_dir: str = ""  # "" = $CTRBENCH_CACHE or ~/.cache/ctrbench


# ---- reading ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # int | float | str | btag
    required: bool = True  # a row must have a value (else an empty field is NULL)


def _header(path: Path) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline()
    text = first.decode("utf-8-sig", "replace").strip()
    if not text:
        raise DatasetError(f"{path} is empty (expected a header line naming the columns)")
    return [name.strip() for name in text.split(",")]


def _data_line(path: Path, row: int) -> tuple[int, str]:
    """(line number, text) of data row ``row`` (0-based, blank lines skipped as pyarrow does)."""
    seen = -1
    with open(path, "rb") as f:
        f.readline()
        for line_no, line in enumerate(f, 2):
            if line.strip():
                seen += 1
                if seen == row:
                    return line_no, line.decode("utf-8", "replace").rstrip("\r\n")
    return -1, ""


def _allowed(col: Column) -> str:
    if col.kind == "btag":
        return "one of " + ", ".join(BTAGS)
    what = {"int": "a whole number", "float": "a number", "str": "text"}[col.kind]
    return what if col.required else f"{what}, empty or NULL"


def _bad_value(
    path: Path, row: int, names: list[str], col: Column, count: int = 1, allowed: str = ""
) -> DatasetError:
    """``<file>:<line>: column 'x' has 'v'; allowed: ...`` for data row ``row``."""
    line_no, text = _data_line(path, row)
    fields = text.split(",")
    idx = names.index(col.name)
    value = fields[idx].strip() if idx < len(fields) else ""
    more = f" ({count} such rows in this block)" if count > 1 else ""
    return DatasetError(
        f"{path}:{line_no}: column {col.name!r} has {value!r}; allowed: {allowed or _allowed(col)}{more}"
    )


def _first_bad_line(
    path: Path, names: list[str], wanted: list[Column], start_row: int, why: str
) -> DatasetError:
    """Locate what pyarrow refused (its messages carry no line number), from data row ``start_row``."""
    seen = -1
    by_name = {c.name: c for c in wanted}
    with open(path, "rb") as f:
        f.readline()
        for line_no, raw in enumerate(f, 2):
            if not raw.strip():
                continue
            seen += 1
            if seen < start_row:
                continue
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            fields = text.split(",")
            if len(fields) != len(names):
                return DatasetError(
                    f"{path}:{line_no}: malformed line ({len(fields)} fields, the header has {len(names)}: "
                    f"{', '.join(names)}): {text[:80]!r}"
                )
            for name, value in zip(names, fields, strict=True):
                col = by_name.get(name)
                v = value.strip()
                if col is None or col.kind in ("str", "btag") or (v in ("", "NULL") and not col.required):
                    continue
                try:
                    int(v) if col.kind == "int" else float(v)
                except ValueError:
                    return DatasetError(
                        f"{path}:{line_no}: column {name!r} has {v!r}; allowed: {_allowed(col)}"
                    )
    return DatasetError(
        f"{path} could not be read as CSV after data row {start_row}: {' '.join(why.split())}"
    )


def stream(
    path: Path, wanted: list[Column], block_mb: int = 16
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(first data row, columns) per record batch of a CSV with a header, columns by header name.

    ints → int64 (an empty/NULL field of an optional column is ``NULL``), floats → float64 (NaN),
    strings → object arrays, btag → codes into :data:`BTAGS`. A value that does not fit is one
    :class:`DatasetError` naming the file, line, column and what is allowed.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = _header(path)
    missing = [c.name for c in wanted if c.name not in names]
    if missing:
        raise DatasetError(
            f"{path} has no column {', '.join(map(repr, missing))} (header: {', '.join(names)}); "
            f"expected {', '.join(c.name for c in wanted)}"
        )
    types = {
        c.name: {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "btag": pa.string()}[c.kind]
        for c in wanted
    }
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                skip_rows=1, column_names=names, block_size=max(1, block_mb) << 20, use_threads=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=[c.name for c in wanted],
                null_values=["", "NULL"],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, StopIteration) as exc:
        if isinstance(exc, StopIteration) or "Empty CSV" in str(exc):
            raise DatasetError(f"{path} has a header but no rows") from exc
        raise _first_bad_line(path, names, wanted, 0, str(exc)) from exc
    row = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            raise _first_bad_line(path, names, wanted, row, str(exc)) from exc
        out: dict[str, np.ndarray] = {}
        for col in wanted:
            arr = batch.column(col.name)
            nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
            if nulls is not None and (col.required or col.kind == "btag"):
                bad = np.flatnonzero(nulls)
                raise _bad_value(path, row + int(bad[0]), names, col, len(bad))
            if col.kind == "int":
                values = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
                out[col.name] = np.where(nulls, NULL, values) if nulls is not None else values
            elif col.kind == "float":
                out[col.name] = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            elif col.kind == "str":
                out[col.name] = np.asarray(arr.fill_null("NULL").to_numpy(zero_copy_only=False), dtype=object)
            else:
                enc = arr.dictionary_encode()
                words = [str(w).strip() for w in enc.dictionary.to_pylist()]
                code = np.array([BTAGS.index(w) if w in BTAGS else -1 for w in words], dtype=np.int8)
                codes = code[enc.indices.to_numpy(zero_copy_only=False)]
                if (codes < 0).any():
                    bad = np.flatnonzero(codes < 0)
                    raise _bad_value(path, row + int(bad[0]), names, col, len(bad))
                out[col.name] = codes
        yield row, out
        row += batch.num_rows
    if row == 0:
        raise DatasetError(f"{path} has a header but no rows")


# ---- vocabularies -------------------------------------------------------------------------------
class Vocab:
    """Raw values → ids: kept values (seen >= min_count times) get 2.., the others 1 (<OOV>)."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, min_count: int, names: list[str] | None = None):
        self.keys = np.sort(keys[counts >= min_count])
        self.names = names  # raw name per key code (strings encoded as codes), else str(key)

    def __len__(self) -> int:
        return len(self.keys) + FIRST_ID

    def encode(self, raw: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.full(len(raw), OOV, dtype=np.int64)
        pos = np.searchsorted(self.keys, raw)
        pos = np.minimum(pos, len(self.keys) - 1)
        return np.where(self.keys[pos] == raw, pos + FIRST_ID, OOV).astype(np.int64)

    def strings(self) -> np.ndarray:
        def name(k: np.int64) -> str:
            if self.names is not None:
                return self.names[int(k)]
            return "NULL" if k == NULL else str(int(k))

        return np.array(["", "<OOV>", *(name(k) for k in self.keys)], dtype=str)


def _counts(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Merge (unique keys, counts) pairs."""
    keys = np.concatenate([k for k, _ in parts]) if parts else np.zeros(0, np.int64)
    counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, np.int64)
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inv.reshape(-1), weights=counts, minlength=len(uniq)).astype(np.int64)


def _unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys, counts = np.unique(values, return_counts=True)
    return keys.astype(np.int64), counts.astype(np.int64)


# ---- the plugin ---------------------------------------------------------------------------------
def _validate(c: TaobaoConfig) -> None:
    def bad(name: str, allowed: str) -> DatasetError:
        return DatasetError(f"dataset.{name}={getattr(c, name)!r} is invalid: must be {allowed}")

    if c.max_len < 1:
        raise bad("max_len", "an integer >= 1")
    if not c.btags or any(b not in BTAGS for b in c.btags):
        raise bad("btags", "a non-empty list drawn from " + ", ".join(BTAGS))
    if c.min_count < 1:
        raise bad("min_count", "an integer >= 1")
    if c.test_days < 1:
        raise bad("test_days", "an integer >= 1")
    if c.val_days < 0:
        raise bad("val_days", "an integer >= 0")
    if c.price not in PRICES:
        raise bad("price", " or ".join(PRICES))
    if c.shards < 0:
        raise bad("shards", "an integer >= 0 (0 = automatic)")
    if c.block_mb < 1:
        raise bad("block_mb", "an integer >= 1")


@dataclass
class Impressions:
    user: np.ndarray  # raw user id
    time: np.ndarray
    adgroup: np.ndarray
    pid: np.ndarray  # code into pid_names
    pid_names: list[str]
    label: np.ndarray


def read_impressions(path: Path, block_mb: int) -> Impressions:
    cols = [Column("user", "int"), Column("time_stamp", "int"), Column("adgroup_id", "int")]
    cols += [Column("pid", "str", required=False), Column("clk", "int")]
    names = _header(path)
    if "nonclk" in names:
        cols.append(Column("nonclk", "int"))
    parts: dict[str, list[np.ndarray]] = {c.name: [] for c in cols}
    for row, batch in stream(path, cols, block_mb):
        clk = batch["clk"]
        bad = np.flatnonzero((clk != 0) & (clk != 1))
        if len(bad):
            raise _bad_value(
                path, row + int(bad[0]), names, Column("clk", "int"), len(bad), "0 or 1 (clicked)"
            )
        if "nonclk" in batch:
            bad = np.flatnonzero(batch["nonclk"] != 1 - clk)
            if len(bad):
                line_no, _ = _data_line(path, row + int(bad[0]))
                raise DatasetError(
                    f"{path}:{line_no}: column 'nonclk' has {int(batch['nonclk'][bad[0]])} with clk="
                    f"{int(clk[bad[0]])}; allowed: nonclk = 1 - clk ({len(bad)} such rows in this block)"
                )
        for k, v in batch.items():
            parts[k].append(v)
    pid_names, pid = np.unique(np.concatenate(parts["pid"]).astype(str), return_inverse=True)
    return Impressions(
        np.concatenate(parts["user"]),
        np.concatenate(parts["time_stamp"]),
        np.concatenate(parts["adgroup_id"]),
        pid.reshape(-1).astype(np.int64),
        [str(p) for p in pid_names],
        np.concatenate(parts["clk"]).astype(np.float32),
    )


def read_table(
    path: Path, key: str, columns: list[Column], block_mb: int
) -> tuple[dict[str, np.ndarray], int]:
    """A small table keyed by ``key`` (first line wins); returns (columns sorted by key, duplicates)."""
    parts: dict[str, list[np.ndarray]] = {c.name: [] for c in [Column(key, "int"), *columns]}
    for _, batch in stream(path, [Column(key, "int"), *columns], block_mb):
        for k, v in batch.items():
            parts[k].append(v)
    table = {k: np.concatenate(v) for k, v in parts.items()}
    keys, first = np.unique(table[key], return_index=True)
    return {k: v[first] for k, v in table.items()}, len(table[key]) - len(keys)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in ``sorted_keys``, -1 when absent."""
    if not len(sorted_keys):
        return np.full(len(values), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == values, pos, -1)


class _DenseLookup:
    """Raw user id → user code (or -1), by one array when the ids are small (the real ones are < 1.2M)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys
        self.table: np.ndarray | None = None
        if len(keys) and keys[0] >= 0 and keys[-1] < (1 << 27):
            self.table = np.full(int(keys[-1]) + 1, -1, dtype=np.int32)
            self.table[keys] = np.arange(len(keys), dtype=np.int32)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.table is None:
            return _lookup(self.keys, values)
        inside = (values >= 0) & (values < len(self.table))
        return np.where(inside, self.table[np.where(inside, values, 0)], -1)


@dataclass
class Spilled:
    folder: Path
    shards: int
    read: int
    by_btag: dict[str, int]
    kept: int
    tmin: int


_SPILL = (("user", np.int32), ("time", np.int64), ("cate", np.int64), ("brand", np.int64), ("btag", np.int8))


def spill_behaviours(
    path: Path,
    folder: Path,
    users: _DenseLookup,
    last_time: np.ndarray,
    btags: list[str],
    shards: int,
    block_mb: int,
) -> Spilled:
    """Stream ``behavior_log.csv``; keep behaviours of ``btags``, of known users, earlier than the
    user's last impression; append them to per-shard files (shard = user code mod ``shards``)."""
    cols = [Column("user", "int"), Column("time_stamp", "int"), Column("btag", "btag")]
    cols += [Column("cate", "int", required=False), Column("brand", "int", required=False)]
    keep_tag = np.array([b in btags for b in BTAGS])
    files = {(s, n): open(folder / f"{s}.{n}", "wb") for s in range(shards) for n, _ in _SPILL}  # noqa: SIM115
    read, kept, tmin = 0, 0, None
    by_btag = np.zeros(len(BTAGS), dtype=np.int64)
    try:
        for _, b in stream(path, cols, block_mb):
            read += len(b["user"])
            by_btag += np.bincount(b["btag"], minlength=len(BTAGS))
            code = users(b["user"])
            t = b["time_stamp"]
            ok = keep_tag[b["btag"]] & (code >= 0)
            ok &= t < last_time[np.where(code >= 0, code, 0)]
            sel = np.flatnonzero(ok)
            if not len(sel):
                continue
            code, t = code[sel].astype(np.int32), t[sel]
            low = int(t.min())
            tmin = low if tmin is None else min(tmin, low)
            shard = code % shards
            order = np.argsort(shard, kind="stable")
            bounds = np.searchsorted(shard[order], np.arange(shards + 1))
            arrays = {
                "user": code,
                "time": t,
                "cate": b["cate"][sel],
                "brand": b["brand"][sel],
                "btag": b["btag"][sel],
            }
            for name, dtype in _SPILL:
                ordered = arrays[name][order].astype(dtype, copy=False)
                for s in range(shards):
                    if bounds[s + 1] > bounds[s]:
                        ordered[bounds[s] : bounds[s + 1]].tofile(files[s, name])
            kept += len(sel)
    finally:
        for f in files.values():
            f.close()
    return Spilled(folder, shards, read, dict(zip(BTAGS, map(int, by_btag), strict=True)), kept, tmin or 0)


class TaobaoDataset:
    """Tianchi display-ad logs under BARS' TaobaoAd_x1 protocol; see the module docstring."""

    Config = TaobaoConfig

    def __init__(self, config: TaobaoConfig) -> None:
        _validate(config)
        self.config = config
        self._work: list[Path] = []

    def raw_files(self) -> dict[str, Path]:
        c = self.config
        if not c.root:
            raise DatasetError(
                "dataset.root is empty: download raw_sample.csv, ad_feature.csv, user_profile.csv and "
                "behavior_log.csv from https://tianchi.aliyun.com/dataset/56 (login required), unpack them "
                "into one folder and set dataset.root=<that folder>"
            )
        return require_files(Path(c.root).expanduser(), FILES)

    def load(self) -> DatasetSplits:
        files = self.raw_files()
        cache = ArrayCache("taobao", FORMAT_VERSION, self.config.cache_dir)
        options = protocol_options(self.config, ignore=("shards", "block_mb"))
        options["btags"] = sorted(options["btags"])
        try:
            return cache.load_or_build(list(files.values()), options, lambda: self.build(files)).data
        finally:  # the spill folder (and the built sequences, mapped from it) once the cache holds them
            for folder in self._work:
                shutil.rmtree(folder, ignore_errors=True)
            self._work.clear()

    # ---- protocol ------------------------------------------------------------------------------
    def build(self, files: dict[str, Path]) -> CachedData:
        """The arrays; the spill folder (under the cache root, next to the cache folders) holds the
        shards and the flat sequences until :meth:`load` has stored them."""
        work = cache_root(self.config.cache_dir) / "taobao"
        work.mkdir(parents=True, exist_ok=True)
        folder = Path(
            tempfile.mkdtemp(prefix=tmp_prefix("spill"), dir=work)
        )  # removed if left by a killed build
        self._work.append(folder)
        try:
            return self._build(files, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _build(self, files: dict[str, Path], work: Path) -> CachedData:
        c = self.config
        imp = read_impressions(files["raw_sample"], c.block_mb)
        ads, ad_dups = read_table(
            files["ad_feature"],
            "adgroup_id",
            [*(Column(n, "int", required=False) for n in AD), Column("price", "float", required=False)],
            c.block_mb,
        )
        profiles, user_dups = read_table(
            files["user_profile"], "userid", [Column(n, "int", required=False) for n in PROFILE], c.block_mb
        )
        n_read = len(imp.user)
        ad_row = _lookup(ads["adgroup_id"], imp.adgroup)
        profile_row = _lookup(profiles["userid"], imp.user)
        keep = (ad_row >= 0) & (profile_row >= 0)
        dropped = {
            "impressions_without_user_profile": int((profile_row < 0).sum()),
            "impressions_without_ad_feature": int((ad_row < 0).sum()),
            "impressions_dropped": int((~keep).sum()),
            "duplicate_ad_feature_lines": ad_dups,
            "duplicate_user_profile_lines": user_dups,
        }
        if not keep.any():
            raise DatasetError(
                f"no impression of {files['raw_sample']} has both a user_profile line and an ad_feature line "
                f"({dropped['impressions_without_user_profile']} without profile, "
                f"{dropped['impressions_without_ad_feature']} without ad)"
            )
        rows = np.flatnonzero(keep)
        user_raw, time = imp.user[rows], imp.time[rows]
        ad_row, profile_row = ad_row[rows], profile_row[rows]
        user_keys, user_code = np.unique(user_raw, return_inverse=True)
        user_code = user_code.reshape(-1)
        n_users = len(user_keys)

        # splits by China day: the last test_days days are test, the val_days before them validation
        day = (time + CHINA) // DAY
        last = int(day.max())
        part = np.full(len(rows), TRAIN, dtype=np.int8)
        part[day > last - c.test_days - c.val_days] = VAL
        part[day > last - c.test_days] = TEST
        for name, p in (("train", TRAIN), ("test", TEST)):
            if not (part == p).any():
                raise DatasetError(
                    f"the {name} split is empty: the impressions span {last - int(day.min()) + 1} day(s), "
                    f"test_days={c.test_days}, val_days={c.val_days}"
                )

        # behaviours: stream, filter, spill per user shard, then sort and trim shard by shard
        last_time = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last_time, user_code, time)
        size = files["behavior_log"].stat().st_size
        shards = c.shards or max(1, math.ceil(size / 32 / 16_000_000))
        spilled = spill_behaviours(
            files["behavior_log"], work, _DenseLookup(user_keys), last_time, list(c.btags), shards, c.block_mb
        )
        seq_index, ends, lengths, shard_files = self._trim(spilled, user_code, time, n_users)

        # vocabularies: counted on the training rows (and, for shared tables, the stored behaviours)
        train = part == TRAIN
        profile_cols = {n: profiles[n][profile_row] for n in PROFILE}
        ad_cols = {n: ads[n][ad_row] for n in AD}
        raw_rows: dict[str, np.ndarray] = {}
        if c.user_feature:
            raw_rows["userid"] = user_raw
        raw_rows.update(profile_cols)
        raw_rows["adgroup_id"] = imp.adgroup[rows]
        raw_rows.update(ad_cols)
        raw_rows["pid"] = imp.pid[rows]
        raw_rows["btag"] = np.zeros(len(rows), dtype=np.int64)  # the candidate: pv
        seq_counts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"cate": [], "brand": [], "btag": []}
        for s in range(shards):
            for name in seq_counts:
                seq_counts[name].append(_unique_counts(np.load(shard_files[s][name], mmap_mode="r")))
        shared = {"cate_id": "cate", "brand": "brand", "btag": "btag"}
        vocabs: dict[str, Vocab] = {}
        for name, values in raw_rows.items():
            counted = [_unique_counts(values[train])]
            if name in shared:
                counted += seq_counts[shared[name]]
            keys, counts = _counts(*counted)
            names = imp.pid_names if name == "pid" else (list(BTAGS) if name == "btag" else None)
            vocabs[name] = Vocab(keys, counts, c.min_count, names)
        columns: dict[str, np.ndarray] = {"user": user_code.astype(np.int64) + 1}
        for name, values in raw_rows.items():
            columns[name] = vocabs[name].encode(values)
        price = ads["price"][ad_row]
        missing_price = np.isnan(price)  # an empty or NULL price: fed as 0, counted
        price = np.where(missing_price, 0.0, price)
        dense = np.log1p(price) if c.price == "log" else price
        columns["price"] = dense.astype(np.float32).reshape(-1, 1)
        columns["label"] = imp.label[rows]

        # the stored sequences: per shard, its users in code order; one flat int64 array per field
        total = int(lengths.sum())
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        flat = {
            name: np.lib.format.open_memmap(work / f"{name}.npy", mode="w+", dtype=np.int64, shape=(total,))
            for name, _ in SEQUENCES
        }
        at = 0
        for s in range(shards):
            parts = {k: np.load(shard_files[s][k]) for k in ("cate", "brand", "btag")}
            n = len(parts["cate"])
            flat["cate_his"][at : at + n] = vocabs["cate_id"].encode(parts["cate"])
            flat["brand_his"][at : at + n] = vocabs["brand"].encode(parts["brand"])
            flat["btag_his"][at : at + n] = vocabs["btag"].encode(parts["btag"].astype(np.int64))
            at += n
        schema = self._schema(vocabs, c.max_len)
        seq = seq_index[user_code]
        splits = []
        for p in (TRAIN, VAL, TEST):
            idx = np.flatnonzero(part == p)
            splits.append(
                Split(
                    columns={k: np.ascontiguousarray(v[idx]) for k, v in columns.items()},
                    seq=np.ascontiguousarray(seq[idx]),
                    end=np.ascontiguousarray(ends[idx]),
                )
            )
        vocabularies = {name: vocabs[name].strings() for name in raw_rows}
        data = DatasetSplits(schema, *splits, sequences=Sequences(offsets, flat), vocabularies=vocabularies)
        first_day = np.datetime64(int(day.min()), "D")
        data.info = split_stats(
            data,
            impressions_read=n_read,
            impressions=len(rows),
            dropped=dropped,
            days={
                "first": str(first_day),
                "last": str(np.datetime64(last, "D")),
                "test_from": str(np.datetime64(last - c.test_days + 1, "D")),
                "val_days": c.val_days,
            },
            behaviours_read=spilled.read,
            behaviours_read_by_btag=spilled.by_btag,
            behaviours_kept=spilled.kept,
            behaviours_stored=total,
            btags=",".join(b for b in BTAGS if b in c.btags),
            shards=shards,
            min_count=c.min_count,
            vocab_sizes={k: len(v) for k, v in vocabs.items()},
            price=c.price,
            impressions_without_price=int(missing_price.sum()),
        )
        data.info["items"] = len(vocabs["adgroup_id"]) - FIRST_ID
        data.info["categories"] = len(vocabs["cate_id"]) - FIRST_ID
        return CachedData(data)

    def _trim(
        self, spilled: Spilled, user_code: np.ndarray, time: np.ndarray, n_users: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Path]]]:
        """Per shard: sort its behaviours by (user, time) (ties in file order), find each row's end (the
        behaviours strictly before it) and keep only what a row can read. Returns (sequence index per
        user code, end per row, stored length per sequence, the shard's kept raw columns on disk)."""
        c = self.config
        shards, folder = spilled.shards, spilled.folder
        tbase = min(int(time.min()), spilled.tmin)
        if int(time.max()) - tbase >= (1 << _TIME_BITS) or n_users >= (1 << (62 - _TIME_BITS)):
            raise DatasetError(
                f"time_stamp values span {int(time.max()) - tbase} s, more than this build supports "
                f"({1 << _TIME_BITS} s); check the time_stamp columns of raw_sample.csv and behavior_log.csv"
            )
        codes = np.arange(n_users, dtype=np.int64)
        seq_order = np.lexsort((codes, codes % shards))
        seq_index = np.empty(n_users, dtype=np.int64)
        seq_index[seq_order] = np.arange(n_users)
        imp_order = np.lexsort((time, user_code))  # impressions by (user, time)
        imp_user, imp_time = user_code[imp_order], time[imp_order]
        ends = np.zeros(len(user_code), dtype=np.int64)
        lengths = np.zeros(n_users, dtype=np.int64)
        out: list[dict[str, Path]] = []
        for s in range(shards):
            raw = {n: np.fromfile(folder / f"{s}.{n}", dtype=d) for n, d in _SPILL}
            order = np.lexsort((raw["time"], raw["user"]))  # stable: equal times keep file order
            bu = raw["user"][order].astype(np.int64)
            bkey = (bu << _TIME_BITS) | (raw["time"][order] - tbase)
            users = codes[codes % shards == s]
            ustart = np.searchsorted(bkey, users << _TIME_BITS)
            uend = np.r_[ustart[1:], len(bkey)]
            mine = np.flatnonzero(imp_user % shards == s)
            iu = imp_user[mine]
            ikey = (iu << _TIME_BITS) | (imp_time[mine] - tbase)
            end_abs = np.searchsorted(bkey, ikey, side="left")  # strictly earlier behaviours
            local = np.searchsorted(users, iu)
            first_end = np.full(len(users), np.iinfo(np.int64).max)
            np.minimum.at(first_end, local, end_abs)
            keep_from = np.maximum(ustart, np.minimum(first_end, uend) - c.max_len)
            ends[imp_order[mine]] = end_abs - keep_from[local]
            n_keep = uend - keep_from
            lengths[users] = n_keep
            take = np.repeat(keep_from - np.r_[0, np.cumsum(n_keep)[:-1]], n_keep) + np.arange(
                int(n_keep.sum())
            )
            kept = order[take]
            paths = {}
            for name in ("cate", "brand", "btag"):
                paths[name] = folder / f"{s}.kept.{name}.npy"
                np.save(paths[name], raw[name][kept])
            for name, _ in _SPILL:
                os.remove(folder / f"{s}.{name}")
            del raw, order, bu, bkey, kept
            out.append(paths)
        return seq_index, ends, lengths[seq_order], out

    @staticmethod
    def _schema(vocabs: dict[str, Vocab], max_len: int) -> Schema:
        fields = [Field(name, "categorical", vocab=len(v)) for name, v in vocabs.items()]
        fields.append(Field("price", "dense", dim=1))
        for name, table in SEQUENCES:
            fields.append(Field(name, "sequence", vocab=len(vocabs[table]), table=table, length="hist_len"))
        return Schema(fields=tuple(fields), group="user", label="label", max_len=max_len)


__all__ = ["TaobaoConfig", "TaobaoDataset", "SPLITS", "stream"]
