"""The benchmarks run and print the JSON fields users and notes rely on (tiny settings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PIPELINE, tiny_sets

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_sets()


def _json(args):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_throughput_prints_json():
    # bf16 explicitly: the preset's `auto` is fp32 on AVX2-only CPUs, and fp32 + channels_last hits a
    # pathologically slow conv backward there (over 100 s for 3 steps of a width-4 net; bf16: 144 ms/step).
    out = _json(["bench/throughput.py", "--preset", "cpu-demo", "--steps", "2", "--warmup", "1",
                 "--augment-samples", "50", "--variants", "base,channels_last", "--end-to-end",
                 *tiny_sets("train.amp=bf16")])
    assert out["train_img_per_s"] > 0 and out["augment_img_per_s"] > 0 and out["augment_device_img_per_s"] > 0
    assert out["variants"]["channels_last"]["train_img_per_s"] > 0 and out["batch"] == 16
    e2e = out["end_to_end"]
    assert e2e["device"]["augment_on"] == "device" and e2e["workers"]["augment_on"] == "workers"
    assert e2e["device"]["img_per_s"] > 0 and e2e["workers"]["img_per_s"] > 0


@pytest.mark.slow
def test_quality_prints_curve_and_baselines(fmnist_small_root):
    # 2,000 real train and 500 test images: the evaluations (3 probes) in seconds, not on 70k images
    out = _json(["bench/quality.py", "--preset", "cpu-demo", *TINY, "--set", f"data.root={fmnist_small_root}",
                 "--set", "train.epochs=2",
                 "--set", "eval.knn_every_epochs=1", "--set", "eval.knn_train_samples=500",
                 "--set", "eval.knn_test_samples=200", "--set", "eval.probe_epochs=1"])
    assert [p["epoch"] for p in out["knn_curve"]] == [0, 1, 2]
    for key in ("trained", "random_init"):
        assert 10 <= out[key]["knn/final_top1"] <= 100 and 10 <= out[key]["probe/top1"] <= 100
    assert 60 <= out["raw_pixels_linear/top1"] <= 95


@pytest.mark.slow
def test_quality_seeds_prints_a_seeds_by_precision_table_with_mean_and_worst(fmnist_small_root):
    tiny = [a for s in ("eval.knn_every_epochs=0", "eval.probe_epochs=1", f"data.root={fmnist_small_root}")
            for a in ("--set", s)]
    out = _json(["bench/quality_seeds.py", "--preset", "cpu-demo", "--seeds", "0,1", "--precisions",
                 "fp32-avx2,bf16", *TINY, *tiny])
    assert [(r["precision"], r["seed"]) for r in out["runs"]] == [
        ("fp32-avx2", 0), ("fp32-avx2", 1), ("bf16", 0), ("bf16", 1)]
    here = torch.backends.cpu.get_cpu_capability()
    assert [r["cpu_capability"] for r in out["runs"]] == ["AVX2", "AVX2", here, here]  # the AVX2 stand-in took
    for precision in ("fp32-avx2", "bf16"):
        probes = [r["probe"] for r in out["runs"] if r["precision"] == precision]
        assert all(10 <= p <= 100 for p in probes)
        assert out["summary"][precision]["probe"] == {"mean": round(sum(probes) / 2, 2), "worst": min(probes),
                                                      "spread": round(max(probes) - min(probes), 2)}


@pytest.mark.slow
def test_vs_lightly_trains_both_sides_for_the_budget_and_evaluates_both_the_same_way(fmnist_small_root):
    out = _json(["bench/vs_lightly.py", "--minutes", "0.1", "--seeds", "0", "--lightly-workers", "0", *TINY,
                 "--set", f"data.root={fmnist_small_root}", "--set", "eval.probe_epochs=1"])
    assert out["minutes"] == 0.1 and out["lightly"].startswith("1.6")
    assert out["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # which kernels both sides ran
    run = out["runs"][0]
    for side in ("ours", "lightly"):
        assert run[side]["steps"] > 1 and 10 <= run[side]["probe"] <= 100 and 10 <= run[side]["knn"] <= 100
    assert 6 <= run["lightly"]["train_s"] < 9  # lightly trains until the 6 s are spent
    assert 2 <= run["ours"]["train_s"] <= 12  # ours: as many steps as a timed run says fit in 6 s
    assert run["ours_minus_lightly"]["probe"] == round(run["ours"]["probe"] - run["lightly"]["probe"], 2)
    assert out["mean_gap"] == run["ours_minus_lightly"]


@pytest.mark.slow
@pytest.mark.integration
def test_pipeline_bench_splits_wall_time():
    out = _json(["bench/pipeline.py", "--preset", "cpu-demo", "--subset", "256",
                 *tiny_sets(*PIPELINE, "eval.probe_epochs=2")])
    run = out["first_run"]
    assert run["decision"] == "champion" and run["uploaded_objects"] > 0
    assert all(run[k] > 0 for k in ("staging_s", "training_s", "evaluation_s", "registry_s"))
    assert run["wall_s"] >= run["staging_s"] + run["training_s"] + run["evaluation_s"] + run["registry_s"]
    assert out["ratio_pipeline_over_bare"] > 1


def test_scaling_model_prints_the_infra_readme_numbers():
    out = _json(["bench/scaling_model.py"])
    r50 = out["models"]["r50"]
    assert r50["params"] == 38_199_360 and r50["grad_mb_per_step"] == 152.8
    assert r50["efficiency"]["8_gpus"]["eth_25g"] == {"comm_ms": 85.6, "no_overlap": 0.38, "full_overlap": 0.61}
    assert out["cost"]["8x_g6.2xlarge_10gbe"]["usd"] == 156 and out["cost"]["1x_g6.2xlarge"]["hours"] == 96.1


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # starts a Ray cluster
def test_distributed_nodes_bench_reports_disjoint_s3_reads_per_worker():
    out = _json(["bench/distributed.py", "--preset", "cpu-demo", "--nodes", "2", "--shards", "4", "--steps", "4",
                 *tiny_sets("data.train_subset=null")])
    (row,) = out["rows"]
    assert row["nodes"] == 2 and out["shards"] == 4 and row["steps_per_epoch"] == 4
    reads = row["s3_bytes_read_per_worker"]
    assert len(reads) == 2 and all(r > 0 for r in reads)
    assert sum(reads) == out["dataset_bytes"]  # each shard read once per epoch, by one worker


def test_reproduce_verdicts_rejudges_a_written_report_from_its_trials_numbers(tmp_path):
    from simsiam.config import load_config
    from simsiam.reproduce import claim_rows, plan_trials

    claims, runs, alias = plan_trials(load_config("reproduce-cpu"), "collapse", 3)
    fixed_gap = {0: 0.3, 1: -0.4, 2: 0.6}  # the fixed predictor about level with the baseline
    results = {r.name: {"probe/top1": 80.0 + r.seed - (fixed_gap[r.seed] if r.key == "fixed_random_predictor" else 0),
                        "knn/final_top1": 70.0, "train/z_std_ratio": 0.9,
                        "train/loss": -0.9 + 0.01 * r.seed if r.key == "baseline" else -0.2,
                        "collapsed": r.key in ("no_stop_grad", "no_predictor")} for r in runs}
    rows = claim_rows(claims, runs, alias, results)
    legacy = {"probe/top1": "probe_top1", "knn/final_top1": "knn_top1", "train/z_std_ratio": "z_std_ratio",
              "train/loss": "loss"}
    for row in rows:  # as an older rule wrote them, with the trial fields named as before 2026-12-07
        row["verdict"], row["why"] = "inconclusive at this budget", "written before"
        row["trials"] = [{legacy.get(k, k): v for k, v in t.items()} for t in row["trials"]]
    report = {"suite": "collapse", "preset": "reproduce-cpu", "seeds": 3, "verdicts": {"as written": 5},
              "rows": [*rows, {**rows[0], "claim": "a claim since dropped", "trials": []}]}
    (tmp_path / "reproduce.json").write_text(json.dumps(report))
    out = _json(["bench/reproduce_verdicts.py", str(tmp_path / "reproduce.json")])
    assert out["verdicts_written"] == {"as written": 5}
    assert out["verdicts_now"] == {"holds": 4, "smaller than the paper's": 1}
    fixed = next(r for r in out["rows"] if r["claim"].startswith("A predictor fixed"))
    assert fixed["verdict"] == "smaller than the paper's" and "paired gap +0.17" in fixed["why"]
    assert out["claims_dropped_since"] == ["a claim since dropped"] and out["claims_added_since"] == []


@pytest.mark.integration
def test_stage_scale_bench_measures_a_prefix_that_grows_by_one_percent():
    """bench/stage_scale.py on 500 objects (the note's run: 100,000): a grown prefix uploads about 1%."""
    out = _json(["bench/stage_scale.py", "--objects", "500", "--shard-size", "50"])
    first, grown, same = out["first"], out["grown_by_1_percent"], out["unchanged"]
    assert first["samples"] == 500 and first["shards"] == 10 and first["peak_rss_mib"] > 0
    assert grown["samples"] == 505 and grown["reused_shards"] == 10 and grown["uploaded_share_of_bytes"] < 0.05
    assert same["cached"] and same["uploaded_bytes"] == 0


def test_embed_throughput_compares_the_embed_path_with_a_plain_forward_and_onnxruntime():
    out = _json(["bench/embed_throughput.py", "--images", "256", "--repeats", "1", *TINY])
    assert out["images"] == 256 and out["embed_img_s"] > 0 and out["plain_torch_img_s"] > 0
    assert out["ratio_embed_to_plain"] == pytest.approx(out["embed_img_s"] / out["plain_torch_img_s"], rel=0.01)
    assert out["onnxruntime_img_s"] > 0
