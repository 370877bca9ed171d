"""Warm-started retraining (``init_from=RUN_DIR``) on synthetic data with drift (``dataset.days``)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset
from ctrbench.engine import job, warm_start
from ctrbench.engine.provenance import data_fingerprint
from ctrbench.engine.selection import CHECKPOINT_NAME, LAST_NAME

# 300 users over a 10-day timeline; one epoch of BaseModel on days 1-5 takes about a second
DRIFT = SyntheticConfig(n_users=300, n_items=500, n_cats=20, item_std=1.0)
ARGS = [
    "dataset.n_users=300",
    "dataset.n_items=500",
    "dataset.n_cats=20",
    "dataset.item_std=1.0",
    "model=base",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "seed=1",
]
OLD = [*ARGS, "dataset.days=[1,5]"]
NEW = [*ARGS, "dataset.days=[6,7]"]
# measured (seeds 1, 2, 3): day-8 test AUC warm 0.726 / 0.726 / 0.727, cold 0.595 / 0.614 / 0.591
MARGIN = 0.05


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished BaseModel run on days 1-5 (its dataset cache removed afterwards: the run folder alone
    must be enough to start from)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ctrbench import registry
    from ctrbench.cli import conf_dir

    root = tmp_path_factory.mktemp("old")
    cache = root / "cache"
    registry.register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        record = job.run(compose("config", [*OLD, f"dataset.cache_dir={cache}"]), root / "run")
    GlobalHydra.instance().clear()
    assert record["status"] == "ok", record.get("error")
    shutil.rmtree(cache)
    job._DATA_CACHE.clear()
    return root / "run"


# ---- the data ------------------------------------------------------------------------------------
def test_days_keep_raw_ids_stable_with_new_items_and_drifting_popularity() -> None:
    early = SyntheticDataset(replace(DRIFT, days=[1, 5])).load()
    late = SyntheticDataset(replace(DRIFT, days=[6, 7])).load()
    assert early.info["eval_day"] == 6 and late.info["eval_day"] == 8
    v_early, v_late = early.vocabularies, late.vocabularies
    assert set(v_early) == set(early.schema.tables()) and v_early["item"][0] == ""
    for table, rows in late.schema.tables().items():
        assert len(v_late[table]) == rows
    # the same user's behaviours, as raw ids, agree in both ranges (the early range's stored prefix)
    item_e, item_l = v_early["item"], v_late["item"]
    off_e, off_l = early.sequences.offsets, late.sequences.offsets
    hist_e, hist_l = early.sequences.columns["hist_item"], late.sequences.columns["hist_item"]
    for u in range(0, 300, 37):
        a, b = item_e[hist_e[off_e[u] : off_e[u + 1]]], item_l[hist_l[off_l[u] : off_l[u + 1]]]
        assert len(b) >= len(a) > 0 and np.array_equal(a, b[: len(a)])
    # day 6 is the early range's evaluation day and part of the late range's training days: same
    # impressions (user, raw item, label), whatever range is asked for
    ev = np.concatenate([early.val.columns["label"], early.test.columns["label"]])
    ev_key = np.concatenate(
        [
            v_early["user"][s.columns["user"]] + "/" + item_e[s.columns["item"]]
            for s in (early.val, early.test)
        ]
    )
    tr = late.train
    tr_key = v_late["user"][tr.columns["user"]] + "/" + item_l[tr.columns["item"]]
    day6 = np.isin(tr_key, ev_key)
    assert day6.sum() >= len(ev) * 0.9  # (a pair can repeat within a day)
    first = dict(zip(ev_key.tolist(), ev.tolist(), strict=True))
    assert (tr.columns["label"][day6] == np.array([first[k] for k in tr_key[day6]])).mean() > 0.9
    # new items: the late range names items the early one never saw
    new_items = set(item_l[1:]) - set(item_e[1:])
    assert late.info["items_new"] > 0 and len(new_items) > 10
    # drifting popularity: the most shown items of the two ranges differ
    top = [set(np.bincount(d.train.columns["item"]).argsort()[-20:]) for d in (early, late)]
    raw_top = [{v[i] for i in t} for v, t in zip((item_e, item_l), top, strict=True)]
    assert len(raw_top[0] & raw_top[1]) < 18


def test_plain_data_is_unchanged_and_has_no_vocabularies() -> None:
    data = SyntheticDataset(DRIFT).load()
    assert data.vocabularies is None and data.schema.tables()["item"] == DRIFT.n_items + 1


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("days", [5, 1], "1 <= first <= last < n_days"),
        ("days", [1, 10], "1 <= first <= last < n_days (10)"),
        ("days", [3], "[first, last]"),
        ("n_days", 1, "an integer >= 2"),
        ("new_item_frac", 1.0, "in [0, 1)"),
        ("pop_drift", -1.0, ">= 0"),
    ],
)
def test_bad_day_options_name_the_option(option: str, value: object, says: str) -> None:
    with pytest.raises(ValueError, match=rf"^dataset\.{option}=.*{re.escape(says)}"):
        SyntheticDataset(replace(DRIFT, **{option: value}))


def test_days_need_the_time_split() -> None:
    with pytest.raises(ValueError, match=r"dataset\.split='user'.*with dataset\.days"):
        SyntheticDataset(replace(DRIFT, days=[1, 5], split="user"))


# ---- the weights ---------------------------------------------------------------------------------
def test_old_rows_are_kept_bitwise_new_ids_fresh_and_dense_layers_copied(compose_cfg, old_run: Path) -> None:
    """Before the first step: every id of the old run has its old row (found by raw id in the old
    run's own vocabularies/, its cache being gone), new ids have the fresh initialisation, the
    padding row is zero, every other tensor is the old one."""
    cfg = compose_cfg(NEW)
    data = job.load_data(cfg)
    fresh, _ = job.build_task(cfg, data)
    task, _ = job.build_task(cfg, data)
    src = warm_start.source(str(old_run), old_run.parent / "new")
    summary = warm_start.apply(task.model, task.schema, data, src, "base", data_fingerprint(data))

    old_state = torch.load(old_run / "checkpoints" / CHECKPOINT_NAME, weights_only=True)["state_dict"]
    old_vocab = warm_start.read_vocabularies(old_run)
    new_vocab = data.vocabularies
    state, fresh_state = task.model.state_dict(), fresh.model.state_dict()
    tables = warm_start.bank_tables(task.model)
    for key, table in tables.items():
        old_row = {raw: i for i, raw in enumerate(old_vocab[table].tolist()) if raw}
        old_w, new_w = old_state[f"model.{key}"], state[key]
        kept = new = 0
        for i, raw in enumerate(new_vocab[table].tolist()):
            if i == 0:
                assert torch.count_nonzero(new_w[0]) == 0
            elif raw in old_row:
                assert torch.equal(new_w[i], old_w[old_row[raw]]), (table, raw)
                kept += 1
            else:
                assert torch.equal(new_w[i], fresh_state[key][i]), (table, raw)
                new += 1
        got = summary["tables"][table]
        assert (got["kept"], got["new"], got["by"]) == (kept, new, "raw id")
        assert got["dropped"] == len(old_row) - kept
    assert summary["tables"]["item"]["new"] > 10 and summary["tables"]["item"]["kept"] > 300
    dense = [k for k in state if k not in tables]
    assert dense and sorted(dense) == summary["copied"]
    for key in dense:
        assert torch.equal(state[key], old_state[f"model.{key}"]), key


def test_warm_start_beats_a_cold_start_on_day_8_and_the_record_says_where_it_started(
    compose_cfg, old_run: Path, tmp_path: Path
) -> None:
    warm = job.run(compose_cfg([*NEW, f"init_from={old_run}"]), tmp_path / "warm")
    cold = job.run(compose_cfg(NEW), tmp_path / "cold")
    assert warm["status"] == cold["status"] == "ok", (warm.get("error"), cold.get("error"))
    print(f"day-8 test AUC: warm {warm['test_auc']:.4f}, cold {cold['test_auc']:.4f}")
    assert warm["test_auc"] >= cold["test_auc"] + MARGIN
    stored = json.loads((tmp_path / "warm" / "result.json").read_text())
    start = stored["init_from"]
    assert start["path"] == str(old_run.resolve()) and start["applied"] is True
    assert start["run"]["model"] == "base" and start["run"]["seed"] == 1
    assert start["run"]["data"] == json.loads((old_run / "result.json").read_text())["fingerprint"]["data"]
    assert start["tables"]["item"]["new"] > 0 and start["tables"]["item"]["kept"] > 0
    assert stored["fingerprint"]["init_from"]["checkpoint_sha256"] == start["checkpoint_sha256"]
    assert "init_from" not in cold and "init_from" not in cold["fingerprint"]
    # its own raw ids are kept with it, so the next day can start from this run
    assert stored["vocabularies"]["rows"]["item"] == len(
        warm_start.read_vocabularies(tmp_path / "warm")["item"]
    )


# ---- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["model=din"], "the old run trained model 'base', this job model 'din'"),
        (["model.emb_dim=4"], "embedding table 'user' has width 18 in the old run, 4 now"),
        (
            ["model.mlp=[100,80]"],
            "layer 'mlp.net.0.weight' has shape (200, 126) in the old run, (100, 126) now",
        ),
        (["model.mlp=[200]"], "the models differ (only in the old run's: mlp.net.3.weight"),
    ],
)
def test_a_model_that_does_not_fit_is_refused_in_one_line(
    compose_cfg, old_run: Path, tmp_path: Path, overrides: list[str], says: str
) -> None:
    before = _tree(old_run)
    record = job.run(compose_cfg([*NEW, *overrides, f"init_from={old_run}"]), tmp_path / "new")
    assert record["status"] == "failed"
    assert record["error"].startswith(f"WarmStartError: init_from={old_run.resolve()}: ")
    assert says in record["error"] and "\n" not in record["error"]
    assert _tree(old_run) == before  # the old run is only read
    assert not (tmp_path / "new" / "checkpoints").exists()


def test_a_field_the_old_run_lacked_is_refused(
    compose_cfg, old_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_cfg(NEW)
    data = job.load_data(cfg)
    task, _ = job.build_task(cfg, data)
    src = warm_start.source(str(old_run), old_run.parent / "new")
    lacking = {k: v for k, v in src.state_dict().items() if ".tables.ctx." not in k}
    monkeypatch.setattr(src, "_state", lacking)
    with pytest.raises(
        warm_start.WarmStartError, match=r"table\(s\) ctx \(field\(s\) ctx\) are not in the old"
    ):
        warm_start.apply(task.model, task.schema, data, src, "base", data_fingerprint(data))


def test_folders_that_are_not_a_finished_run_are_refused(old_run: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(old_run, sweep / "0")
    with pytest.raises(
        warm_start.WarmStartError, match=r"is a sweep folder \(jobs 0\): name one job's folder"
    ):
        warm_start.source(str(sweep), tmp_path / "x")
    assert warm_start.source(str(sweep / "0"), tmp_path / "x").path == (sweep / "0").resolve()
    (sweep / "0" / "checkpoints" / CHECKPOINT_NAME).unlink()
    with pytest.raises(warm_start.WarmStartError, match=r"has no checkpoints/best\.ckpt \(the run kept none"):
        warm_start.source(str(sweep / "0"), tmp_path / "x")
    with pytest.raises(warm_start.WarmStartError, match=r"no such folder"):
        warm_start.source(str(tmp_path / "nope"), tmp_path / "x")
    failed = tmp_path / "failed"
    shutil.copytree(old_run, failed)
    record = json.loads((failed / "result.json").read_text())
    (failed / "result.json").write_text(json.dumps({**record, "status": "failed"}))
    with pytest.raises(warm_start.WarmStartError, match=r"its run is 'failed', not 'ok'"):
        warm_start.source(str(failed), tmp_path / "x")


def test_starting_from_its_own_folder_writes_nothing(compose_cfg, old_run: Path) -> None:
    before = _tree(old_run)
    record = job.run(compose_cfg([*OLD, f"init_from={old_run}"]), old_run)
    assert record["status"] == "failed" and "is this job's own folder" in record["error"]
    assert _tree(old_run) == before


def test_tables_without_vocabularies_copy_rows_only_on_the_same_data(compose_cfg, tmp_path: Path) -> None:
    plain = [o for o in TINY if not o.startswith("dataset.n_users=")] + ["model=base", "checkpoint=true"]
    first = job.run(compose_cfg([*plain, "dataset.n_users=120"]), tmp_path / "a")
    assert first["status"] == "ok" and first["vocabularies"] is None
    again = job.run(
        compose_cfg([*plain, "dataset.n_users=120", "seed=2", f"init_from={tmp_path / 'a'}"]), tmp_path / "b"
    )
    assert again["status"] == "ok", again.get("error")
    assert {t["by"] for t in again["init_from"]["tables"].values()} == {"row"}
    other = job.run(
        compose_cfg([*plain, "dataset.n_users=130", f"init_from={tmp_path / 'a'}"]), tmp_path / "c"
    )
    assert other["status"] == "failed"
    assert (
        "cannot be mapped: either run's data names no raw ids (vocabularies) and the data differ"
        in (other["error"])
    )


# ---- resume --------------------------------------------------------------------------------------
def test_an_interrupted_warm_start_resumes_from_its_own_last_checkpoint(
    compose_cfg, old_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "new"
    cfg = compose_cfg([*NEW, "trainer.max_epochs=1", f"init_from={old_run}"])
    done = job.run(cfg, out)
    assert done["status"] == "ok"
    # as a job stopped after its first epoch leaves it: last.ckpt, record 'interrupted'
    ckpt = out / "checkpoints"
    shutil.copyfile(ckpt / CHECKPOINT_NAME, ckpt / LAST_NAME)
    (out / "result.json").write_text(json.dumps({**done, "status": "interrupted"}))
    copies = []
    real_apply = warm_start.apply
    monkeypatch.setattr(
        warm_start, "apply", lambda *a, **kw: copies.append(kw["copy"]) or real_apply(*a, **kw)
    )
    resumed = job.run(cfg, out)
    assert resumed["status"] == "ok" and resumed["resumed_from"] == str(ckpt / LAST_NAME)
    assert copies == [False]  # checked and counted, the weights come from last.ckpt
    assert resumed["init_from"]["applied"] is False
    assert resumed["init_from"]["tables"] == done["init_from"]["tables"]


def test_another_start_is_another_run(compose_cfg, old_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "new"
    cfg = compose_cfg([*NEW, "trainer.max_epochs=1", f"init_from={old_run}"])
    done = job.run(cfg, out)
    assert done["status"] == "ok"
    current = job._fingerprint(cfg, job.load_data(cfg), out)
    assert job.finished_record(out, cfg, current)[0] is not None  # the same start: skipped
    cold = compose_cfg([*NEW, "trainer.max_epochs=1"])
    assert job.finished_record(out, cold, job._fingerprint(cold, job.load_data(cold), out)) == (
        None,
        "the config differs",
    )
    # the same folder, retrained since: its checkpoint differs, so the job runs again
    other = tmp_path / "old"
    shutil.copytree(old_run, other)
    moved = compose_cfg([*NEW, "trainer.max_epochs=1", f"init_from={other}"])
    job.run(moved, out)
    retrained = torch.load(other / "checkpoints" / CHECKPOINT_NAME, weights_only=True)
    retrained["state_dict"] = {k: v + 1 for k, v in retrained["state_dict"].items()}
    torch.save(retrained, other / "checkpoints" / CHECKPOINT_NAME)
    previous, why = job.finished_record(out, moved, job._fingerprint(moved, job.load_data(moved), out))
    assert previous is None and why.startswith("the warm start changed")
