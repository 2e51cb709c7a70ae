"""Where the stage runs (issue 28 item 1): ``--executor auto|local|ray`` (:func:`plan.choose_executor`), the
local plan, the count that decides before the listing whether a Ray is started ahead, and the spread of
photos an int8 model is calibrated on."""

from __future__ import annotations

import pytest

from batch_classify.errors import ConfigError
from batch_classify.listing import count_images
from batch_classify.stage.plan import CORES_PER_DECODE_THREAD, LOCAL_BATCH_SIZE, LOCAL_MAX_IMAGES, choose_executor, plan_local
from batch_classify.stage.quantize import spread
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # whatever this machine has: no GPU shows


def test_auto_runs_a_short_run_here_and_a_long_one_on_ray(no_gpu):
    assert choose_executor("auto", n_images=10, ray_address=None, device="auto") == "local"
    assert choose_executor("auto", n_images=LOCAL_MAX_IMAGES - 1, ray_address=None, device="cpu") == "local"
    assert choose_executor("auto", n_images=LOCAL_MAX_IMAGES, ray_address=None, device="auto") == "ray"


def test_auto_runs_on_ray_with_a_cluster_or_a_gpu(no_gpu):
    assert choose_executor("auto", n_images=10, ray_address="ray://head:10001", device="auto") == "ray"
    assert choose_executor("auto", n_images=10, ray_address="auto", device="cpu") == "ray"
    assert choose_executor("auto", n_images=10, ray_address=None, device="cuda") == "ray"


def test_auto_sees_a_gpu_by_its_device_node(monkeypatch):
    import batch_classify.stage.plan as plan

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(plan.glob, "glob", lambda pattern: ["/dev/nvidia0"] if pattern == "/dev/nvidia[0-9]*" else [])
    assert plan.local_gpus()
    assert choose_executor("auto", n_images=10, ray_address=None, device="auto") == "ray"
    assert choose_executor("auto", n_images=10, ray_address=None, device="cpu") == "local"  # the user said CPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert not plan.local_gpus()


def test_a_chosen_executor_is_kept_and_a_contradiction_refused(no_gpu):
    assert choose_executor("ray", n_images=1, ray_address=None, device="auto") == "ray"
    assert choose_executor("local", n_images=10**7, ray_address=None, device="auto") == "local"
    with pytest.raises(ConfigError, match=r"--executor local .* a Ray cluster is given \(ray://h:1\); drop --ray-address"):
        choose_executor("local", n_images=1, ray_address="ray://h:1", device="auto")
    with pytest.raises(ConfigError, match="--executor local runs the model on the CPUs"):
        choose_executor("local", n_images=1, ray_address=None, device="cuda")


def test_the_local_plan_gives_the_model_every_core_and_decodes_beside_it():
    two = plan_local(2)
    assert (two.executor, two.device, two.num_actors, two.threads_per_actor, two.decode_threads) == ("local", "cpu", 1, 2, 1)
    assert two.runtime == "onnx" and two.batch_size == LOCAL_BATCH_SIZE and two.precision == "float32"
    assert plan_local(16).decode_threads == 16 // CORES_PER_DECODE_THREAD
    assert plan_local(2, runtime="torch", batch_size=8).runtime == "torch" and plan_local(2, batch_size=8).batch_size == 8
    with pytest.raises(ConfigError):
        plan_local(2, runtime="torch", onnx_only=True)


def test_the_count_stops_at_its_bound_and_skips_what_the_listing_skips(tmp_path):
    for i in range(7):
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.png").write_bytes(b"x")
    storage = StorageOptions()
    assert count_images(str(tmp_path), storage, up_to=100) == 7
    assert count_images(str(tmp_path), storage, up_to=5) == 5
    assert count_images(str(tmp_path / "missing"), storage, up_to=100) == 0  # the listing says what is missing


def test_settings_take_the_executor_and_refuse_int8_on_pytorch(tmp_path):
    base = {"input": str(tmp_path), "output": str(tmp_path / "out")}
    assert RunSettings(**base).executor == "auto" and RunSettings(**base).precision == "float32"
    assert RunSettings(**base, executor="local", precision="int8").precision == "int8"
    with pytest.raises(ValueError, match="--precision int8 runs under ONNX Runtime on the CPUs, not with --runtime torch"):
        RunSettings(**base, precision="int8", runtime="torch")
    with pytest.raises(ValueError, match="not with --device cuda"):
        RunSettings(**base, precision="int8", device="cuda")
    with pytest.raises(ValueError):
        RunSettings(**base, executor="threads")
    with pytest.raises(ValueError, match=r"--executor local runs the stage in this process, but a Ray cluster is given \(auto"):
        RunSettings(**base, executor="local", ray_address="auto")


def test_calibration_photos_are_spread_over_the_listing():
    paths = [f"p{i:03d}" for i in range(1000)]
    picked = spread(paths, 100)
    assert len(picked) == 100 and len(set(picked)) == 100
    assert picked[0] == "p000" and picked[-1] == "p990"
    assert spread(paths[:30], 100) == paths[:30]
