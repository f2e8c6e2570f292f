"""Pipeline builders: embedded pipelines from configs with seeded random weights, or a real checkpoint.

Nothing is fetched from the hub: latency does not depend on weight values, so ``sd15`` is the
Stable Diffusion 1.5 architecture with random weights, built straight on the target device in
about a second. ``--perf-model`` keeps the real ``from_pretrained`` path for users who point the
suite at a checkpoint; it loads safetensors only and never runs remote code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

PROMPT = "a photo of an astronaut riding a horse on mars"  # the guide's prompt
SEED = 0

_SCHEDULER = dict(  # DDIM, as in the guide's table; SD 1.5's noise schedule
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000,
)


_SDXL_SCHEDULER = dict(  # EulerDiscrete, SDXL base's scheduler
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
    timestep_spacing="leading", num_train_timesteps=1000,
)
_FLUX_SCHEDULER = dict(  # FlowMatch Euler with FLUX.1-dev's resolution-dependent shift
    shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096,
)


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """One embedded pipeline: its family (:data:`perf.stages.FAMILIES`), component configs, and
    the run settings it defaults to (those a user of that model runs)."""

    name: str
    summary: str
    vae: dict
    text_encoder: dict
    steps: int
    size: int
    batch: int = 1
    family: str = "sd"
    unet: dict | None = None
    transformer: dict | None = None  # a DiT denoiser (family "dit")
    text_encoder_2: dict | None = None  # SDXL: OpenCLIP-bigG with projection; Flux: T5 encoder
    call: dict = dataclasses.field(default_factory=dict)  # extra pipeline arguments (guidance, T5 length)
    #: Why it cannot run without CUDA (its weights alone outgrow a CPU machine's memory), or None.
    needs_cuda: str | None = None
    #: The dtype its weights are made in. float32, so that each stage casts the same weights; a family
    #: whose every stage runs in bfloat16 (Flux) is built in it, which halves the build's peak memory.
    build_dtype: str = "float32"

    def part(self, name: str) -> dict:
        """The config of component ``name``, which this pipeline's family must declare."""
        config = getattr(self, name)
        if config is None:
            raise ValueError(f"pipeline {self.name!r} ({self.family}) declares no {name} config")
        return config

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    @property
    def size_multiple(self) -> int:
        return size_multiple(self.vae_scale_factor, self.family)


def register(*added: PipelineSpec) -> None:
    """Add embedded pipelines (what ``pytest_perf_pipelines`` returns). Raises ValueError, one line,
    for a name taken by another pipeline or an unknown family. The same spec again is a no-op."""
    for spec in added:
        if not isinstance(spec, PipelineSpec):
            raise ValueError(f"pytest_perf_pipelines returned {spec!r}, not a perf.pipelines.PipelineSpec")
        if SPECS.get(spec.name) not in (None, spec):
            raise ValueError(f"pipeline {spec.name!r} is declared twice: give the added pipeline a name of its own")
        if spec.family not in ("sd", "sdxl", "dit"):
            raise ValueError(f"pipeline {spec.name!r}: unknown family {spec.family!r}; valid: sd, sdxl, dit")
    SPECS.update({spec.name: spec for spec in added})


def size_multiple(vae_scale_factor: int, family: str) -> int:
    """Image sides must be a multiple of this: the VAE's factor, twice that for a DiT (Flux packs
    2x2 latent patches)."""
    return vae_scale_factor * (2 if family == "dit" else 1)


SPECS: dict[str, PipelineSpec] = {
    "sd15": PipelineSpec(
        name="sd15",
        summary="Stable Diffusion 1.5 architecture, seeded random weights (UNet 860M)",
        unet=dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ),
        text_encoder=dict(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        ),
        steps=50,
        size=512,
    ),
    "tiny": PipelineSpec(
        name="tiny",
        summary="the same family shrunk to a fraction of a second per image on two CPU cores",
        unet=dict(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), attention_head_dim=8, cross_attention_dim=32, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=64,
            norm_num_groups=32, block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        ),
        text_encoder=dict(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=1000, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32,
        ),
        steps=10,
        # 32 px (16x16 latents): fp32 0.2 s, the float16 stages 0.6-1.3 s per image on the 2-core
        # CI machine, so every recipe runs on CPU; at 64 px the float16 stages took 10-14 s.
        size=32,
    ),
    "sdxl": PipelineSpec(
        name="sdxl",
        summary="SDXL base architecture, seeded random weights (UNet 2.6B, CLIP-L + OpenCLIP-bigG)",
        family="sdxl",
        unet=dict(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
            block_out_channels=(128, 256, 512, 512), scaling_factor=0.13025, force_upcast=True,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ),
        text_encoder=dict(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        ),
        text_encoder_2=dict(
            hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
            vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
        ),
        # SDXL users run 25-30 steps; 20 so that the full ladder (fp32 alone is 13 s an image at 30 steps on
        # an H100) fits one 10-minute device command. The pipeline's default guidance (5.0).
        steps=20,
        size=1024,
        needs_cuda="about 14 GB of float32 weights and minutes per image on CPU; tiny-sdxl runs the same "
                   "classes there",
    ),
    "tiny-sdxl": PipelineSpec(
        name="tiny-sdxl",
        summary="SDXL's classes shrunk for CPU: text-time conditioning, two text encoders, 2-level UNet",
        family="sdxl",
        unet=dict(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2),
            cross_attention_dim=64, use_linear_projection=True, norm_num_groups=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=8 * 6 + 32,
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32,
            norm_num_groups=32, block_out_channels=(32, 64), scaling_factor=0.13025, force_upcast=True,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        ),
        text_encoder=dict(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=1000, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32,
        ),
        text_encoder_2=dict(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=1000, max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
        ),
        steps=10,
        size=32,
    ),
    "flux": PipelineSpec(
        name="flux",
        summary="FLUX.1-dev architecture, seeded random weights (transformer 12B: 19 double- and 38 "
                "single-stream blocks, hidden 3072; T5-XXL + CLIP-L; guidance-distilled)",
        family="dit",
        transformer=dict(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
            guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, sample_size=1024,
            block_out_channels=(128, 256, 512, 512), scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        ),
        text_encoder=dict(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        ),
        text_encoder_2=dict(  # T5-XXL encoder (v1.1)
            vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
            feed_forward_proj="gated-gelu",
        ),
        steps=28,  # FLUX.1-dev's usual 28 steps, guidance 3.5, 512 T5 tokens
        size=1024,
        call=dict(guidance_scale=3.5, max_sequence_length=512),
        build_dtype="bfloat16",  # 62 GiB of float32 weights would leave an 80 GB card 17 GiB to cast them in
        needs_cuda="about 67 GB of float32 weights (transformer 11.9B, T5-XXL encoder 4.7B); tiny-flux runs "
                   "the same classes on CPU",
    ),
    "tiny-flux": PipelineSpec(
        name="tiny-flux",
        summary="Flux's classes shrunk for CPU: double- and single-stream blocks, RoPE, T5 + CLIP, FlowMatch",
        family="dit",
        transformer=dict(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            guidance_embeds=True, axes_dims_rope=(4, 6, 6),
        ),
        vae=dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32,
            norm_num_groups=32, block_out_channels=(32, 64), scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        ),
        text_encoder=dict(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            vocab_size=1000, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32,
        ),
        text_encoder_2=dict(
            vocab_size=128, d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2, feed_forward_proj="gated-gelu",
        ),
        steps=10,
        size=32,
        call=dict(guidance_scale=3.5, max_sequence_length=32),
    ),
}
#: The pipelines declared here; others come from the ``pytest_perf_pipelines`` hook (:func:`register`).
BUILT_IN = frozenset(SPECS)


def default_pipeline() -> str:
    return "sd15" if torch.cuda.is_available() else "tiny"


# -- tokenizer ------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-character map (transformers 5 no longer exports it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs)))


def build_tokenizer() -> Any:
    """A byte-level CLIP vocabulary with no merges: every prompt tokenizes, and padding makes
    the text encoder's work (77 positions) exactly that of the real tokenizer. The tokenizer
    reads its files once, so they live in a temporary folder that is gone when it returns."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    with tempfile.TemporaryDirectory(prefix="diffusers-perf-tokenizer-") as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        # model_max_length must be set: without it padding overflows (transformers 5).
        return CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"), model_max_length=77)


# -- embedded pipelines -----------------------------------------------------------------------------


def build_t5_tokenizer() -> Any:
    """A T5 (Unigram) tokenizer over printable ASCII, made in memory: every prompt tokenizes,
    and padding to ``max_sequence_length`` makes the T5 encoder's work that of the real one."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(chr(code), -1.0) for code in range(33, 127)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build(name: str, device: torch.device | str, seed: int = SEED) -> Any:
    """Build an embedded pipeline directly on ``device`` in its ``build_dtype``, weights seeded by ``seed``."""
    spec = SPECS[name]
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, spec.build_dtype))
    try:
        pipe = {"sd": _build_sd, "sdxl": _build_sdxl, "dit": _build_flux}[spec.family](spec, torch.device(device))
    finally:
        torch.set_default_dtype(default)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _clip(config: dict, tokenizer: Any, with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    model = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model(CLIPTextConfig(**config, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))


def _build_sd(spec: PipelineSpec, device: torch.device) -> Any:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = build_tokenizer()
    with device:
        unet, vae = UNet2DConditionModel(**spec.part("unet")), AutoencoderKL(**spec.vae)
        text_encoder = _clip(spec.text_encoder, tokenizer)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(**_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl(spec: PipelineSpec, device: torch.device) -> Any:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = build_tokenizer()
    with device:
        unet, vae = UNet2DConditionModel(**spec.part("unet")), AutoencoderKL(**spec.vae)
        text_encoder = _clip(spec.text_encoder, tokenizer)
        text_encoder_2 = _clip(spec.part("text_encoder_2"), tokenizer, with_projection=True)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=EulerDiscreteScheduler(**_SDXL_SCHEDULER),
    )


def _build_flux(spec: PipelineSpec, device: torch.device) -> Any:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer, t5_tokenizer = build_tokenizer(), build_t5_tokenizer()
    with device:
        transformer, vae = FluxTransformer2DModel(**spec.part("transformer")), AutoencoderKL(**spec.vae)
        text_encoder = _clip(spec.text_encoder, tokenizer)
        text_encoder_2 = T5EncoderModel(T5Config(**spec.part("text_encoder_2"), is_encoder_decoder=False))
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**_FLUX_SCHEDULER), vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer, transformer=transformer,
    )


def family_of_model(folder: Path) -> str:
    """The family of a ``--perf-model`` folder, from its ``model_index.json``."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return "sd"
    if "transformer" in index:
        return "dit"
    return "sdxl" if "text_encoder_2" in index else "sd"


# -- real checkpoints ------------------------------------------------------------------------------


class ModelError(ValueError):
    """A ``--perf-model`` that cannot be used; the message is one line that says what to do."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(path_or_id: str) -> Path:
    """Turn ``--perf-model`` into a local folder holding a safetensors diffusers pipeline.

    Checked up front (at configure time) so that a typo costs one line, not a traceback after
    the first stage has been built.
    """
    path = Path(path_or_id).expanduser()
    if path.exists():
        folder = path
    elif _HUB_ID.match(path_or_id) and not path_or_id.startswith((".", "/", "~")):
        folder = _from_hub(path_or_id)
    else:
        raise ModelError(f"--perf-model {path_or_id!r}: no such folder, and not a hub id of the form 'org/name'")
    _check_pipeline_folder(folder, path_or_id)
    return folder


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelError(
            f"--perf-model {repo_id!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it first or pass a local folder"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10))
    except Exception as exc:
        raise ModelError(
            f"--perf-model {repo_id!r}: could not fetch it from the hub ({type(exc).__name__}); with no network, "
            "pass a local folder saved by save_pretrained, or set HF_HUB_OFFLINE=1 and use a cached model"
        ) from None


def _check_pipeline_folder(folder: Path, given: str) -> None:
    if not folder.is_dir():
        raise ModelError(f"--perf-model {given!r}: is a file; pass the folder that holds model_index.json")
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelError(
            f"--perf-model {given!r}: not a diffusers pipeline (no model_index.json); "
            "pass a folder written by DiffusionPipeline.save_pretrained"
        )
    try:
        components = json.loads(index.read_text())
    except ValueError as exc:
        raise ModelError(f"--perf-model {given!r}: model_index.json is not valid JSON ({exc})") from None
    if not isinstance(components, dict):
        raise ModelError(f"--perf-model {given!r}: model_index.json holds a {type(components).__name__}, not the "
                         "object of components that DiffusionPipeline.save_pretrained writes")
    pickled = []
    for name, value in components.items():
        sub = folder / name
        if name.startswith("_") or not isinstance(value, list) or not sub.is_dir():
            continue
        files = [p.name for p in sub.iterdir()]
        has_safe = any(f.endswith(".safetensors") for f in files)
        has_pickle = any(f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")) for f in files)
        if has_pickle and not has_safe:
            pickled.append(name)
    if pickled:
        raise ModelError(
            f"--perf-model {given!r}: {', '.join(pickled)} hold{'s' if len(pickled) == 1 else ''} only pickled "
            "weights (.bin), which the suite never loads; convert them to safetensors "
            "(pipe.save_pretrained(folder, safe_serialization=True))"
        )


def model_scale_factor(folder: Path) -> int:
    try:
        config = json.loads((folder / "vae" / "config.json").read_text())
        return 2 ** (len(config["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 8


def model_sample_size(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "unet" / "config.json").read_text())
        size = config["sample_size"]
        return int(size if isinstance(size, int) else size[0]) * model_scale_factor(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load(folder: Path, device: torch.device | str) -> Any:
    """``from_pretrained`` in float32 on ``device``: safetensors only, no remote code."""
    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {"use_safetensors": True}
    index = json.loads((folder / "model_index.json").read_text())
    if "safety_checker" in index:
        # The safety checker blanks images itself; the guard must only see numeric failures.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32, **kwargs)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
