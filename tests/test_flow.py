"""Optical flow library: quantisation, sign convention, TV-L1 against OpenCV, API plumbing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from afsd_cli.data.flow import (
    METHODS,
    available_methods,
    compute_flow,
    compute_flow_float,
    dequantize_flow,
    quantize_flow,
)
from afsd_cli.errors import AFSDError, ConfigError, InputError

DATA = Path(__file__).parent / "data" / "flow"
# Our TV-L1 (default parameters) against OpenCV-contrib's CPU DualTVL1OpticalFlow on the
# committed excerpt: measured mean EPE 0.029 / 0.047 / 0.092 px for its three pairs and
# 98.3 % of quantised values within ±1; the bounds leave room for BLAS/threading noise.
TVL1_MEAN_EPE_BOUND = 0.15
TVL1_WITHIN_ONE_BOUND = 0.96
# Few iterations where a test is about plumbing, not accuracy.
QUICK_TVL1 = dict(nscales=3, warps=2, outer_iterations=2, inner_iterations=10)


def textured_image(size: int = 72, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture (cv2-free so the test does not depend on OpenCV's filters)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (size // 4 + 2, size // 4 + 2, 3))
    # Bilinear upsampling by 4 gives gradients everywhere, which every method needs.
    ys = np.linspace(0, coarse.shape[0] - 1.001, size + 16)
    xs = np.linspace(0, coarse.shape[1] - 1.001, size + 16)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return np.clip(top * (1 - fy) + bottom * fy, 0, 255).astype(np.uint8)


def translated_frames(dx: int, dy: int, count: int = 2, size: int = 64) -> np.ndarray:
    """Frames whose content moves by (+dx, +dy) px per frame (x right, y down)."""
    big = textured_image(size + 16)
    frames = [big[8 - k * dy: 8 - k * dy + size, 8 - k * dx: 8 - k * dx + size] for k in range(count)]
    return np.ascontiguousarray(np.stack(frames))


def method_options(method: str) -> dict:
    return dict(QUICK_TVL1) if method == "tvl1" else {}


def usable_methods() -> list[str]:
    return [name for name, (ok, _) in available_methods().items() if ok]


# ------------------------------------------------------------------ quantisation

def test_quantize_rule_matches_denseflow():
    values = np.array([-100.0, -20.0, -19.99, -0.1, 0.0, 0.0785, 0.08, 10.0, 20.0, 20.01, np.nan])
    expected = [0, 0, 0, 127, 128, 128, 128, 191, 255, 255, 128]
    # 255*(v+20)/40 rounded half to even: 0 → 127.5 → 128, 10 → 191.25 → 191.
    assert quantize_flow(values).tolist() == expected
    assert quantize_flow(values).dtype == np.uint8


def test_quantize_round_trip_and_clipping():
    flow = np.linspace(-25, 25, 1001, dtype=np.float32)
    back = dequantize_flow(quantize_flow(flow))
    inside = np.abs(flow) <= 20
    step = 40 / 255
    assert np.all(np.abs(back[inside] - flow[inside]) <= step / 2 + 1e-5)
    assert np.all(back[flow > 20] == pytest.approx(20.0))
    assert np.all(back[flow < -20] == pytest.approx(-20.0))
    every_code = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quantize_flow(dequantize_flow(every_code)), every_code)


def test_dequantize_rejects_non_uint8():
    with pytest.raises(InputError):
        dequantize_flow(np.zeros(3, dtype=np.float32))


# ------------------------------------------------------------------ sign convention

@pytest.mark.parametrize("method", [m for m in METHODS if m != "opencv-tvl1"] + ["opencv-tvl1"])
def test_sign_convention_on_translation(method):
    if not available_methods()[method][0]:
        pytest.skip(f"{method} unavailable here: {available_methods()[method][1]}")
    frames = translated_frames(dx=2, dy=-1)
    flow = compute_flow_float(frames, method=method, **method_options(method))
    interior = flow[0, 12:-12, 12:-12]
    assert np.median(interior[..., 0]) == pytest.approx(2.0, abs=0.25)
    assert np.median(interior[..., 1]) == pytest.approx(-1.0, abs=0.25)
    quantised = compute_flow(frames, method=method, **method_options(method))
    # +2 px → 255*22/40 = 140.25 → 140; -1 px → 121.1 → 121.
    assert abs(int(np.median(quantised[0, 12:-12, 12:-12, 0])) - 140) <= 2
    assert abs(int(np.median(quantised[0, 12:-12, 12:-12, 1])) - 121) <= 2


# ------------------------------------------------------------------ TV-L1 accuracy

def test_tvl1_matches_opencv_contrib_reference():
    data = np.load(DATA / "bikes_excerpt.npz")
    reference = data["flow_opencv_tvl1"].astype(np.float32)
    flow = compute_flow_float(data["frames"], method="tvl1", batch_size=3)
    epe = np.sqrt(((flow - reference) ** 2).sum(-1))
    assert epe.mean() < TVL1_MEAN_EPE_BOUND, epe.mean(axis=(1, 2))
    within = np.abs(quantize_flow(flow).astype(int) - quantize_flow(reference).astype(int)) <= 1
    assert within.mean() > TVL1_WITHIN_ONE_BOUND
    # The approximations are far off on this large-motion clip: the reference is not trivial.
    dis = compute_flow_float(data["frames"], method="dis")
    assert np.sqrt(((dis - reference) ** 2).sum(-1)).mean() > 10 * epe.mean()


def test_tvl1_batched_equals_unbatched():
    frames = np.load(DATA / "bikes_excerpt.npz")["frames"][:3, 32:80, 32:80]
    batched = compute_flow_float(frames, method="tvl1", batch_size=3, **QUICK_TVL1)
    single = compute_flow_float(frames, method="tvl1", batch_size=1, **QUICK_TVL1)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_tvl1_masked_gpu_schedule_equals_cpu_schedule():
    # check_every > 1 is the GPU schedule (finished pairs masked, dropped in bulk); run on the
    # CPU it must give exactly the per-step schedule's result.
    frames = np.load(DATA / "bikes_excerpt.npz")["frames"][:, 32:80, 32:80]
    every_step = compute_flow_float(frames, method="tvl1", check_every=1, **QUICK_TVL1)
    every_fourth = compute_flow_float(frames, method="tvl1", check_every=4, **QUICK_TVL1)
    np.testing.assert_array_equal(every_fourth, every_step)


def test_tvl1_presets_and_options_change_the_work():
    frames = translated_frames(dx=1, dy=1, count=2, size=48)
    fast = compute_flow_float(frames, method="tvl1", preset="fast")
    assert fast.shape == (1, 48, 48, 2)
    bilinear = compute_flow_float(frames, method="tvl1", interpolation="bilinear", **QUICK_TVL1)
    assert np.median(bilinear[0, 8:-8, 8:-8, 0]) == pytest.approx(1.0, abs=0.25)
    with pytest.raises(ConfigError, match="unknown option"):
        compute_flow_float(frames, method="tvl1", bogus=1)
    with pytest.raises(ConfigError, match="preset"):
        compute_flow_float(frames, method="tvl1", preset="nope")
    with pytest.raises(ConfigError):
        compute_flow_float(frames, method="tvl1", warps=0)


# ------------------------------------------------------------------ compute_flow plumbing

@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_shape_dtype_and_last_frame_duplicated(method):
    frames = translated_frames(dx=1, dy=0, count=4, size=40)
    flow = compute_flow(frames, method=method, **method_options(method))
    assert flow.shape == (4, 40, 40, 2) and flow.dtype == np.uint8
    np.testing.assert_array_equal(flow[-1], flow[-2])
    assert not np.array_equal(flow[0], np.full_like(flow[0], 128))


def test_single_frame_gives_zero_motion():
    frames = translated_frames(dx=0, dy=0, count=1, size=32)
    for method in usable_methods():
        flow = compute_flow(frames, method=method)
        assert flow.shape == (1, 32, 32, 2)
        assert np.all(flow == 128)


def test_jpeg_round_trip_stays_close():
    frames = translated_frames(dx=2, dy=0, count=3, size=48)
    plain = compute_flow(frames, method="farneback")
    stored = compute_flow(frames, method="farneback", jpeg_quality=95)
    assert stored.shape == plain.shape and stored.dtype == np.uint8
    difference = np.abs(stored.astype(int) - plain.astype(int))
    assert difference.mean() < 3
    np.testing.assert_array_equal(stored[-1], stored[-2])


def test_grey_conversion_matches_opencv_weights():
    from afsd_cli.data.flow import to_grey

    frames = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]]]], dtype=np.uint8)
    grey = to_grey(frames)
    expected = np.rint(frames.astype(float) @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(grey.astype(int) - expected).max() <= 1
    # By hand: 0.299*255=76.2, 0.587*255=149.7, 0.114*255=29.1, 2.99+117.4+3.42=123.8.
    assert grey[0, 0].tolist() == [76, 150, 29, 124]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 16, 16, 3), dtype=np.float32), "uint8"),
    (np.zeros((3, 16, 16), dtype=np.uint8), "shape"),
    (np.zeros((3, 16, 16, 4), dtype=np.uint8), "shape"),
    (np.zeros((0, 16, 16, 3), dtype=np.uint8), "T=0"),
    (np.zeros((2, 2, 16, 3), dtype=np.uint8), "too small"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_frames_raise_input_error(bad, message):
    with pytest.raises(InputError, match=message):
        compute_flow(bad, method="farneback")


def test_bad_method_device_and_options():
    frames = translated_frames(dx=1, dy=0, count=2, size=32)
    with pytest.raises(ConfigError, match="unknown flow method"):
        compute_flow(frames, method="raft")
    with pytest.raises(ConfigError, match="CPU only"):
        compute_flow(frames, method="farneback", device="cuda")
    with pytest.raises(ConfigError, match="unknown option"):
        compute_flow(frames, method="farneback", levels=2, bogus=1)
    with pytest.raises(ConfigError, match="preset"):
        compute_flow(frames, method="dis", preset="slow")
    with pytest.raises(ConfigError, match="OpenCV rejected"):
        compute_flow(frames, method="farneback", poly_n=4, winsize="big")
    with pytest.raises(ConfigError, match="batch_size"):
        compute_flow(frames, method="tvl1", batch_size=0)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        compute_flow(frames, method="farneback", jpeg_quality=101)


def test_available_methods_reports_every_method():
    methods = available_methods()
    assert set(methods) == set(METHODS) == {"tvl1", "opencv-tvl1", "dis", "farneback"}
    for name, (ok, reason) in methods.items():
        assert isinstance(ok, bool) and reason
    assert methods["tvl1"][0] and methods["farneback"][0] and methods["dis"][0]


def test_opencv_tvl1_unavailable_error_explains_contrib():
    ok, reason = available_methods()["opencv-tvl1"]
    if ok:
        pytest.skip("opencv-contrib is installed here")
    frames = translated_frames(dx=1, dy=0, count=2, size=32)
    with pytest.raises(ConfigError, match="opencv-contrib-python") as info:
        compute_flow(frames, method="opencv-tvl1")
    assert isinstance(info.value, AFSDError)


def test_cuda_device_without_cuda_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the GPU test covers it")
    with pytest.raises(ConfigError, match="CUDA"):
        compute_flow(translated_frames(1, 0, 2, 32), method="tvl1", device="cuda")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
def test_tvl1_cuda_matches_cpu():
    data = np.load(DATA / "bikes_excerpt.npz")
    cpu = compute_flow_float(data["frames"], method="tvl1", device="cpu")
    gpu = compute_flow_float(data["frames"], method="tvl1", device="cuda")
    epe = np.sqrt(((cpu - gpu) ** 2).sum(-1))
    assert epe.mean() < 0.1
    reference = data["flow_opencv_tvl1"].astype(np.float32)
    assert np.sqrt(((gpu - reference) ** 2).sum(-1)).mean() < TVL1_MEAN_EPE_BOUND


def test_torch_median_matches_opencv_median_blur():
    import cv2
    import torch

    from afsd_cli.data.flow.tvl1 import _median_network, _median_torch

    rng = np.random.default_rng(3)
    images = rng.normal(0, 3, (2, 20, 17)).astype(np.float32)
    images[0, 4:9, 4:9] = 1.0  # ties
    for ksize in (3, 5):
        expected = np.stack([cv2.medianBlur(image, ksize) for image in images])
        for median in (_median_torch, _median_network):
            got = median(torch.from_numpy(images), ksize).numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"{median.__name__} k={ksize}")
