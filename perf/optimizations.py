"""How each field of a :class:`perf.stages.Recipe` is applied to a pipeline.

The order is fixed and matters: precision and attention change the modules, so they come
first; channels_last changes the weights' layout; anything that captures the UNet
(``torch.jit.trace``, ``torch.compile``) comes last so that it captures what came before,
including any injected fault (:mod:`perf.inject`).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, ContextManager, Iterator

import torch

from .stages import Recipe

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def process_flags(recipe: Recipe) -> Iterator[None]:
    """What a recipe sets for the whole process (TF32, cuDNN's algorithm search, the order SDPA
    tries its kernels in), set for one stage (its build, its compiles and every call) and restored
    after."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(tf32(recipe.tf32))
        stack.enter_context(cudnn_benchmark(recipe.cudnn_benchmark))
        if recipe.attention == "cudnn":
            stack.enter_context(cudnn_attention_first())
            order = ",".join(str(backend) for backend in torch._C._get_sdp_priority_order())
            stack.enter_context(compile_cache_key(f"diffusers-perf sdpa priority {order}"))
        yield


def compile_cache_key(tag: str) -> ContextManager[Any]:
    """Compiles made under ``tag`` never reuse, nor serve, a compile made under another.

    Why: ``torch.compile``'s caches (AOTAutograd's and Inductor's, on disk and in the compile cache
    this suite keeps) hash the traced graph, Inductor's options and the matmul precision, but not
    SDPA's backend state: the kernel SDPA lowers to is chosen when AOTAutograd traces, from the
    order and flags of that moment. A stage that only changes that state (``cudnn_attention``) then
    got the graph compiled earlier for its parent. Seen on the H200: ``cudnn_attention`` compiled
    after ``sync_free`` matched it kernel for kernel, and compiled first it ran 1001 kernels more
    per generation (``reports/h200/frontier-dec4/``); reproduced on CPU with the backend flags
    (``tests/test_stages.py``). ``torch.compiler.config.cache_key_tag`` is the key PyTorch adds to
    every compile cache for this."""
    return torch.compiler.config.patch(cache_key_tag=tag)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 is process-global; set it for one stage and restore it after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN's algorithm search is process-global, and so is the choice it caches per convolution
    shape: set it for one stage and restore it after. A stage after this one still finds the choices
    cached, as a user's next pipeline in the same process would; it does not search again."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def cudnn_attention_first() -> ContextManager[Any]:
    """SDPA tries cuDNN's fused attention before FlashAttention-2, memory-efficient and math
    attention (PyTorch's own order puts cuDNN last). A call cuDNN cannot take (a VAE attention
    of 512 channels a head) falls through to the next kernel, as it would by default.

    Why a process-wide order and not a processor of its own: ``torch.compile`` chooses the kernel
    when it traces, from this order, so the same flag serves eager and compiled stages. Diffusers'
    dispatcher (``set_attention_backend("_native_cudnn")``) does the same for DiT models only."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH], set_priority=True)


def denoiser_name(pipe: Any) -> str | None:
    """The component that runs once per step: a UNet, or a DiT's transformer."""
    for name in ("unet", "transformer"):
        if getattr(pipe, name, None) is not None:
            return name
    return None


def the_denoiser(pipe: Any) -> str:
    """:func:`denoiser_name`, for code that only runs on a pipeline that has one."""
    name = denoiser_name(pipe)
    if name is None:
        raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer: no stage applies to it")
    return name


def apply(pipe: Any, recipe: Recipe, device: torch.device, *, batch: int, size: int,
          before_quantize: Callable[[Any], None] | None = None,
          before_capture: Callable[[Any], None] | None = None) -> Any:
    """Prepare ``pipe`` as ``recipe`` says; returns the pipeline to time.

    ``before_quantize`` sees the pipeline in its precision, attention and layout, before torchao
    swaps the linears' weights: where the suite counts the model's FLOPs, which
    ``FlopCounterMode`` cannot read through torchao's int8 tensors (on CUDA it raised a
    ``TypeError`` and failed SDXL's ``frontier_int8`` whenever it was a run's first stage; on
    CPU it counted 0 FLOPs for them). ``before_capture`` sees it quantized, before anything
    traces or compiles it."""
    pipe.to(device, DTYPES[recipe.dtype])
    _set_attention(pipe, recipe.attention)
    denoiser = the_denoiser(pipe)
    if recipe.fuse_qkv:
        fuse = getattr(pipe, "fuse_qkv_projections", None) or getattr(pipe, denoiser).fuse_qkv_projections
        fuse()
    if recipe.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if before_quantize is not None:
        before_quantize(pipe)
    if recipe.quantize is not None:
        quantize(getattr(pipe, denoiser), recipe.quantize, recipe.quantize_filter)
    if before_capture is not None:
        before_capture(pipe)
    if recipe.trace_unet:
        pipe.unet = trace_unet(pipe, batch=batch, size=size)
    if recipe.compile is not None:
        setattr(pipe, denoiser, torch.compile(getattr(pipe, denoiser), **recipe.compile))
    if recipe.host_timesteps:
        host_timesteps(pipe, device)
    if recipe.compile_vae is not None:  # diffusion-fast's order: layout first, then the decoder alone
        if getattr(pipe.vae.config, "force_upcast", False) and pipe.vae.dtype == torch.float16:
            # SDXL's VAE asks its pipeline to cast it to float32 and back around every decode: new
            # weight storage each call, which a CUDA-graphed decoder would re-record every time.
            # diffusion-fast runs SDXL with upcast_vae=False, as the fp16-fix VAE's config says.
            pipe.vae.register_to_config(force_upcast=False)
        pipe.vae.to(memory_format=torch.channels_last)
        pipe.vae.decode = torch.compile(pipe.vae.decode, **recipe.compile_vae)
    if recipe.compile_text_encoder is not None:
        # The prompt's and the negative prompt's encodings replay one graph into the same buffers:
        # safe where the pipeline copies each output before the next call (Stable Diffusion's
        # encode_prompt repeats it per image), which is why the stage is declared for "sd" alone.
        pipe.text_encoder = torch.compile(pipe.text_encoder, **recipe.compile_text_encoder)
    return pipe


def host_timesteps(pipe: Any, device: torch.device) -> None:
    """No device-to-host sync in the denoising loop: the scheduler gets its timesteps on the host,
    the UNet a device copy of each, made once per generation.

    Why: Stable Diffusion's pipeline puts the timesteps on the GPU, and DDIM's ``step`` then reads
    them on the host (``alphas_cumprod[timestep]`` on a CPU table, ``if prev_timestep >= 0``), which
    waits for the GPU to finish the step's UNet. The host cannot queue the next step while the GPU
    runs this one, so a step costs its host work *plus* its GPU work: on the H200 ``frontier``'s
    step took 9.4 ms against 6.1 ms of GPU work (``reports/h200/ladder/``). Diffusers removes such
    syncs pipeline by pipeline ("[DtoH sync]" pull requests, huggingface/diffusers#9475, #11696).
    Here the scheduler computes exactly what it computed before (the same CPU scalars), so the
    images are unchanged; only the waiting goes.
    """
    scheduler, denoiser = pipe.scheduler, getattr(pipe, the_denoiser(pipe))
    set_timesteps = scheduler.set_timesteps
    copies: dict[int, torch.Tensor] = {}

    @functools.wraps(set_timesteps)
    def on_host(num_inference_steps: int | None = None, device: torch.device | str = device, **kwargs: Any) -> None:
        set_timesteps(num_inference_steps, **kwargs)  # on the CPU
        on_device = scheduler.timesteps.to(device)  # where the pipeline asked: one copy for the whole loop
        copies.clear()
        copies.update({int(t): on_device[i] for i, t in enumerate(scheduler.timesteps)})

    def device_timestep(module: torch.nn.Module, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        if not (isinstance(timestep, torch.Tensor) and timestep.device.type == "cpu" and timestep.dim() == 0):
            return None
        copy = copies.get(int(timestep))  # a CPU tensor's value: read without waiting for the GPU
        if copy is None:
            return None
        if len(args) > 1:
            return (args[0], copy, *args[2:]), kwargs
        return args, dict(kwargs, timestep=copy)

    scheduler.set_timesteps = on_host
    # On the module the pipeline calls (the compiled wrapper, if compiled), so that the hook runs in
    # Python before the compiled graph, which then sees a device tensor as always.
    denoiser.register_forward_pre_hook(device_timestep, with_kwargs=True)


#: Linears whose input has one row per image, not per token: the time and text-time embeddings,
#: ResNets' time projections and a DiT's adaptive norms. torchao's int8 matmul needs more than 16
#: rows on CUDA ("self.size(0) needs to be greater than 16, but got 2" under classifier-free
#: guidance, seen on an H100), and quantizing them saves nothing.
PER_IMAGE_LINEARS = ("time", "norm", "add_embedding")


def _token_wise(module: torch.nn.Module, name: str) -> bool:
    return (isinstance(module, torch.nn.Linear) and module.in_features > 16 and module.out_features > 16
            and not any(part in name for part in PER_IMAGE_LINEARS))


#: diffusion-fast's shape filter for SDXL's UNet (``apply_dynamic_quant_fn`` in its
#: ``utils/pipeline_utils.py``), measured there on an A100: a linear whose two sides are both at most
#: 1280 ran faster unquantized (int8's per-token scaling costs more than the smaller matmul saves),
#: and so did three larger ones, as (in, out): the 640-channel blocks' GEGLU projection and the
#: cross-attention's key and value projections of the 77 text tokens (2048 wide; fused, 2560 out).
DIFFUSION_FAST_SMALL_SIDE = 1280
DIFFUSION_FAST_SKIPPED = frozenset({(640, 5120), (2048, 2560), (2048, 1280)})


def _diffusion_fast(module: torch.nn.Module, name: str) -> bool:
    if not _token_wise(module, name):
        return False
    shape = (module.in_features, module.out_features)
    return max(shape) > DIFFUSION_FAST_SMALL_SIDE and shape not in DIFFUSION_FAST_SKIPPED


#: Which of the denoiser's linears a recipe quantizes (``Recipe.quantize_filter``), by name.
QUANTIZE_FILTERS: dict[str, Callable[[torch.nn.Module, str], bool]] = {
    "token_wise": _token_wise, "diffusion_fast": _diffusion_fast}


#: The smallest absolute maximum a row's float8 scale is computed from. torchao's row-wise scale is
#: the row's maximum over 448 with no floor, so a row of zeros quantizes as 0/0 = NaN
#: (pytorch/ao#3356). SDXL's pipeline gives classifier-free guidance an all-zero negative prompt
#: (``force_zeros_for_empty_prompt``): every image of SDXL's ``frontier_fp8`` was NaN on the H200
#: without it (``reports/h200/sdxl-quantized/``). 1e-12 is the floor torchao's own float8 training uses.
FP8_ROW_AMAX_FLOOR = 1e-12


def quantize(denoiser: torch.nn.Module, kind: str, which: str = "token_wise") -> None:
    """torchao's dynamic quantization of the denoiser's linears that ``which`` names
    (:data:`QUANTIZE_FILTERS`), before it is compiled (diffusion-fast's order): ``int8`` activations
    and weights, or ``fp8`` row-wise (bfloat16 only).

    ``set_inductor_config=False``: by default torchao turns on Inductor's coordinate-descent tuning
    for the whole process. That makes the first generation compile and benchmark several Triton
    configurations of every kernel, one after another: sd15's fp8 UNet was still compiling after
    220-526 s on an H100 and H200 (``reports/h100/quantized/``). It would also leak into every stage
    compiled after this one. A quantized stage compiles with the Inductor settings its own recipe
    names (``compile``'s, unless it says otherwise), so it differs from its parent by what it declares.

    After ``fuse_qkv_projections()`` this also quantizes the projections fusion replaced, which
    never run again, as flux-fast's recipe does: left in bfloat16 they held 2 GiB more of Flux's
    ``frontier_fp8`` peak on the H200, and the suite failed it (``reports/h200/flux-autotune/``).
    """
    from torchao.quantization import quantize_

    if which not in QUANTIZE_FILTERS:
        raise ValueError(f"unknown quantize_filter {which!r}: {', '.join(QUANTIZE_FILTERS)}")
    if kind == "int8":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        config = Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    elif kind == "fp8":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False,
                                                           activation_value_lb=FP8_ROW_AMAX_FLOOR)
    else:
        raise ValueError(f"unknown quantization {kind!r}: int8 or fp8")
    quantize_(denoiser, config, filter_fn=QUANTIZE_FILTERS[which])


def attention_backend(model: Any, backend: str) -> None:
    """The model's attention modules run through Diffusers' dispatcher on ``backend``.

    ``set_attention_backend`` also makes ``backend`` the process's active one, which every model
    built later would then use for modules that name none; the stage sets it on its own model
    only, so the active backend is put back."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    try:
        model.set_attention_backend(backend)
    finally:
        _AttentionBackendRegistry.set_active_backend(active)


def _set_attention(pipe: Any, attention: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
        return
    if denoiser_name(pipe) == "transformer":
        if attention == "flash3":
            attention_backend(pipe.transformer, "_flash_3")
        return  # otherwise a DiT's own processors (FluxAttnProcessor) already run F.scaled_dot_product_attention
    processor = {"classic": AttnProcessor, "sdpa": AttnProcessor2_0, "cudnn": AttnProcessor2_0}[attention]
    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is not None and hasattr(module, "set_attn_processor"):
            module.set_attn_processor(processor())


class TracedUNet(torch.nn.Module):
    """The guide's traced UNet, extended with what newer pipelines read from ``pipe.unet``.

    Pipelines read ``unet.config`` (sample size, channels, ``time_cond_proj_dim``), ``unet.dtype``
    and ``unet.device``, and call it with keyword arguments and ``return_dict=False``; a bare
    ``ScriptModule`` has none of these and breaks the pipeline.
    """

    def __init__(self, traced: torch.jit.ScriptModule, unet: torch.nn.Module) -> None:
        super().__init__()
        self.traced = traced
        self.config = unet.config
        self._dtype = unet.dtype
        self._device = unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor,
                *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        extra = sorted(k for k, v in kwargs.items() if v is not None) + (["positional extras"] if any(a is not None for a in args) else [])
        if extra:
            raise TypeError(f"the traced UNet was traced without {', '.join(extra)}")
        sample = self.traced(sample, timestep, encoder_hidden_states)[0]
        if not return_dict:
            return (sample,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=sample)


def trace_unet(pipe: Any, *, batch: int, size: int) -> TracedUNet:
    """``torch.jit.trace`` the UNet for the shapes this run uses (classifier-free guidance doubles the batch)."""
    unet = pipe.unet
    config = unet.config
    scale = getattr(pipe, "vae_scale_factor", 8)
    memory_format = torch.channels_last if _is_channels_last(unet) else torch.contiguous_format
    sample = torch.randn(2 * batch, config.in_channels, size // scale, size // scale,
                         device=unet.device, dtype=unet.dtype).to(memory_format=memory_format)
    timestep = torch.tensor(999, device=unet.device)
    text = torch.randn(2 * batch, 77, config.cross_attention_dim, device=unet.device, dtype=unet.dtype)
    forward = unet.forward
    unet.forward = functools.partial(forward, return_dict=False)
    try:
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(unet, (sample, timestep, text), check_trace=False)
    finally:
        unet.forward = forward
    return TracedUNet(traced, unet)


def _is_channels_last(module: torch.nn.Module) -> bool:
    for param in module.parameters():
        if param.dim() == 4:
            return param.is_contiguous(memory_format=torch.channels_last) and not param.is_contiguous()
    return False
