"""GPU busy time: the interval arithmetic, and what happens where there is no GPU."""

import pytest
import torch

from perf import gpu_time


@pytest.mark.parametrize("intervals, seconds", [
    ([], 0.0),
    ([(0, 10)], 10e-9),
    ([(0, 10), (20, 30)], 20e-9),  # an idle gap counts not at all
    ([(0, 10), (5, 15)], 15e-9),  # overlapping streams count once
    ([(0, 30), (5, 10), (12, 20)], 30e-9),  # nested
    ([(20, 30), (0, 10), (10, 20)], 30e-9),  # unsorted, touching
])
def test_busy_seconds_is_the_union(intervals, seconds):
    assert gpu_time.busy_seconds(intervals) == pytest.approx(seconds)


def test_no_gpu_time_off_cuda():
    calls = []
    assert gpu_time.measure(lambda: calls.append(1), torch.device("cpu"), 5) == gpu_time.Profiled([], {})
    assert calls == []  # nothing is run for it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU busy time needs CUDA")
def test_busy_time_of_a_known_kernel():
    from perf import inject

    x = torch.ones(8, device="cuda")
    torch.ops.diffusers_perf.spin(x, 0.01)
    torch.cuda.synchronize()

    def call():
        torch.ops.diffusers_perf.spin(x, 0.02)
        torch.cuda.synchronize()

    profiled = gpu_time.measure(call, torch.device("cuda"), 3)
    samples = profiled.seconds
    assert profiled.device_counts["kernels"] >= 1 and profiled.device_counts["device_syncs"] >= 1
    assert len(samples) == 3 and all(0.018 < s < 0.03 for s in samples), (samples, inject)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="device counters need CUDA")
def test_device_counters_from_a_profiled_round_equal_those_of_the_counting_round():
    """The host-work round reads its device side from the first profiled round: both must count the same."""
    from perf import counters

    x = torch.ones(1024, device="cuda")

    def call():
        for _ in range(10):
            x.add_(1)
        x.sum().item()  # a device-to-host copy and a stream sync
        torch.cuda.synchronize()

    call()
    profiled = gpu_time.measure(call, torch.device("cuda"), 5)
    alone = counters.count(call, torch.device("cuda"))
    reused = counters.count(call, torch.device("cuda"), profiled.device_counts)
    assert reused == alone and alone["kernels"] >= 11 and alone["memcpy_dtoh"] >= 1



def test_attention_kernels_are_named_with_their_gpu_time():
    """Which kernel SDPA ran (FlashAttention-2, cuDNN, memory-efficient) is read off the trace's names."""
    import torch

    class Event:
        def __init__(self, name, start, end, device=torch.autograd.DeviceType.CUDA):
            self._name, self._start, self._end, self._device = name, start, end, device

        def name(self):
            return self._name

        def start_ns(self):
            return self._start

        def end_ns(self):
            return self._end

        def device_type(self):
            return self._device

    events = [Event("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<40>>", 0, 2_000_000),
              Event("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<40>>", 3_000_000, 4_000_000),
              Event("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16", 5_000_000, 5_500_000),
              Event("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32", 0, 9_000_000),  # a convolution
              Event("aten::scaled_dot_product_attention", 0, 9_000_000, torch.autograd.DeviceType.CPU)]
    found = gpu_time.attention_kernels(events)
    assert found == {"void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<40>>": 3.0,
                     "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16": 0.5}
