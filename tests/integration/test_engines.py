"""Inference engines (ONNX Runtime, PyTorch) and the cluster plan that picks them."""

from __future__ import annotations

import numpy as np
import pytest

from batch_classify.stage import engines
from batch_classify.stage.engines import OnnxEngine, TorchEngine, build_engine, onnx_model, resolve_runtime, uint8_model
from batch_classify.stage.inference import Classifier, run_stage
from batch_classify.stage.plan import CPU_BATCH_SIZE, GPU_BATCH_SIZE, plan_cluster
from batch_classify.models.registry import ModelError, get_spec, load_model
from batch_classify.storage import StorageOptions
from batch_classify.models.vocabulary import imagenet

OPTS = StorageOptions()
LITE0 = "efficientnet_lite0"


def test_runtime_resolution():
    assert resolve_runtime("auto", "cpu") == "onnx"
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_runtime("onnx", "cuda")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", "cpu")


def test_cluster_plan_picks_runtime_and_batch_size():
    gpu = plan_cluster({"CPU": 16, "GPU": 4})
    assert (gpu.device, gpu.num_actors, gpu.num_gpus_per_actor, gpu.runtime, gpu.batch_size) == (
        "cuda", 16, 0.25, "torch", GPU_BATCH_SIZE
    )
    one = plan_cluster({"CPU": 16, "GPU": 2}, num_actors=1)  # fewer actors than GPUs: one GPU each
    shared = plan_cluster({"CPU": 16, "GPU": 2}, num_actors=6)  # more: they share them
    assert (one.num_actors, one.num_gpus_per_actor, shared.num_gpus_per_actor) == (1, 1.0, pytest.approx(1 / 3))
    cpu = plan_cluster({"CPU": 2})
    assert (cpu.device, cpu.num_actors, cpu.threads_per_actor, cpu.runtime, cpu.batch_size) == (
        "cpu", 1, 2, "onnx", CPU_BATCH_SIZE
    )
    big = plan_cluster({"CPU": 32}, batch_size=16, runtime="torch")
    assert (big.num_actors, big.threads_per_actor, big.batch_size, big.runtime) == (8, 4, 16, "torch")
    with pytest.raises(ValueError, match="CPU only"):
        plan_cluster({"CPU": 8, "GPU": 1}, runtime="onnx")


def test_cluster_plan_leaves_cpus_for_decoding():
    """Actors that reserved every CPU would wait forever for decoded images."""
    one = plan_cluster({"CPU": 1})
    assert (one.cpus_per_actor, one.cpus_per_decode_task) == (0.5, 0.5)
    two = plan_cluster({"CPU": 2}, num_actors=2)
    assert (two.cpus_per_actor, two.cpus_per_decode_task, two.threads_per_actor) == (0.5, 1.0, 1)
    assert plan_cluster({"CPU": 16}).cpus_per_actor == 1.0
    assert plan_cluster({"CPU": 16, "GPU": 2}).cpus_per_actor == 0.0
    with pytest.raises(ValueError, match="40 model actors do not fit beside decoding on a cluster with 2 CPUs"):
        plan_cluster({"CPU": 2}, num_actors=40)


@pytest.fixture(scope="module")
def decoded(photos):
    """All 500 shared photos decoded with the Lite0 preset, and their class indices."""
    preset = get_spec(LITE0).preset
    index = {w: i for i, w in enumerate(imagenet().wnids)}
    images = np.stack([preset(p.read_bytes()) for p in photos])
    return images, np.array([index[p.name[:9]] for p in photos])


def test_onnx_agrees_with_pytorch_on_every_photo(decoded):
    """Same top-1 class on all 500 photos, logits within 1e-3; top-1 stays at the measured 0.890."""
    images, labels = decoded
    ort_logits = build_engine(get_spec(LITE0), None, OPTS, runtime="onnx")(images)
    torch_logits = build_engine(get_spec(LITE0), None, OPTS, runtime="torch")(images)
    assert ort_logits.shape == torch_logits.shape == (500, 1000) and ort_logits.dtype == np.float32
    assert np.abs(ort_logits - torch_logits).max() < 1e-3
    assert np.array_equal(ort_logits.argmax(1), torch_logits.argmax(1))
    # 0.890 before the ONNX engine, box resampling and micro-batches; a normalisation mistake costs ~12 points.
    assert (ort_logits.argmax(1) == labels).mean() == pytest.approx(0.890, abs=0.002)


def test_micro_batches_match_single_calls(decoded):
    """A batch of 11 (not a multiple of the micro-batch) gives the logits of 11 one-image calls."""
    images = decoded[0][:11]
    for engine in (OnnxEngine(onnx_model(get_spec(LITE0), None, OPTS), micro_batch=4), build_engine(get_spec(LITE0), None, OPTS, runtime="torch")):
        whole = engine(images)
        single = np.concatenate([engine(images[i : i + 1]) for i in range(len(images))])
        assert whole.shape == (11, 1000)
        np.testing.assert_allclose(whole, single, atol=1e-3)


def test_onnx_export_disagreeing_with_pytorch_is_refused(monkeypatch):
    """The export is compared with PyTorch before use; a mismatch stops the run, naming the way out."""
    onnx_model.cache_clear()
    monkeypatch.setattr(engines, "PARITY_TOLERANCE", -1.0)  # any difference at all now counts as disagreement
    try:
        with pytest.raises(ModelError, match="disagrees with PyTorch.*--runtime torch"):
            onnx_model(get_spec(LITE0), None, OPTS)
    finally:
        onnx_model.cache_clear()


def test_torch_engine_is_the_gpu_code_path_on_cpu(decoded):
    """The engine GPU actors use (inference_mode, micro-batches on CPU; channels_last, pinned copies, bf16 on CUDA)."""
    spec = get_spec(LITE0)
    engine = TorchEngine(uint8_model(load_model(spec, None, OPTS), spec.preset.mean, spec.preset.std), device="cpu")
    assert engine.autocast is False
    logits = engine(decoded[0][:4])
    assert logits.shape == (4, 1000) and np.isfinite(logits).all()


@pytest.mark.parametrize(("runtime", "actors"), [("onnx", 1), ("torch", 1), ("onnx", 2)])
def test_stage_runtimes_give_the_same_predictions(ray_local, photos, runtime, actors):
    """The Ray stage with each runtime (and as many actors as CPUs): every photo once, the same top-1 as a direct call."""
    chosen = photos[:40]
    plan = plan_cluster({"CPU": 2}, runtime=runtime, batch_size=16, num_actors=actors)
    out = []
    result = run_stage(
        [{"path": str(p), "label": None} for p in chosen],
        spec=get_spec(LITE0),
        weights=None,
        storage=OPTS,
        plan=plan,
        on_batch=out.append,
    )
    assert (result.n_input, result.n_predicted, result.n_failed) == (40, 40, 0)
    assert result.first_batch_seconds > 0 and result.steady_images_per_second > 0
    got = {p: int(i) for b in out for p, i in zip(b["path"], b["pred_index"], strict=True)}
    preset = get_spec(LITE0).preset
    direct = Classifier(spec=get_spec(LITE0), weights=None, storage=OPTS, runtime="torch").logits(
        np.stack([preset(p.read_bytes()) for p in chosen])
    )
    assert got == {str(p): int(i) for p, i in zip(chosen, direct.argmax(1), strict=True)}


def test_killed_model_actor_is_replaced_and_every_image_comes_out_once(ray_local, photos):
    """SIGKILL the model actor's process after the first output batch (as the OOM killer would):
    Ray Data restarts it and redoes its batches; each photo still comes out exactly once."""
    import psutil

    chosen = photos[:96]
    killed: list[int] = []
    titles: set[str] = set()

    def kill_actor_once(batch):
        out.append(batch)
        if killed:
            return
        for proc in psutil.process_iter(["pid", "cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])
            if title.startswith("ray::"):
                titles.add(title)
            if title.startswith("ray::") and "Classifier" in title:
                proc.kill()
                killed.append(proc.info["pid"])

    out: list[dict] = []
    result = run_stage(
        [{"path": str(p), "label": None} for p in chosen],
        spec=get_spec(LITE0),
        weights=None,
        storage=OPTS,
        plan=plan_cluster({"CPU": 2}, batch_size=8),
        on_batch=kill_actor_once,
    )
    assert killed, f"no model actor process found among {sorted(titles)}"
    paths = [p for b in out for p in b["path"]]
    assert sorted(paths) == sorted(str(p) for p in chosen)  # none lost, none twice (run_stage checks it too)
    assert (result.n_predicted, result.n_failed) == (96, 0)
