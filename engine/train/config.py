"""Settings of a CUT / FastCUT / U-GAT-IT training run, with the official presets.

Paper: T. Park, A. A. Efros, R. Zhang, J.-Y. Zhu, "Contrastive Learning for Unpaired Image-to-Image Translation",
ECCV 2020. Defaults follow the paper and its official code (taesungp/contrastive-unpaired-translation):

| setting | CUT | FastCUT |
|---|---|---|
| λ_GAN / λ_NCE | 1 / 1 | 1 / 10 |
| identity NCE (NCE on Y → G(Y)) | yes | no |
| flip-equivariance augmentation | no | yes |
| epochs constant / linear decay | 200 / 200 | 150 / 50 |

Common: ResNet-9 generator with antialiased sampling (ngf 64), 70×70 PatchGAN (3 layers, ndf 64, instance norm),
least-squares GAN loss, PatchNCE on generator layers 0,4,8,12,16 with 256 patches per layer, a 2-layer MLP head of
256 units, temperature 0.07, negatives from the same image; Adam lr 2e-4, β = (0.5, 0.999); batch size 1;
load size 286, random crop 256, random horizontal flip; Xavier-normal init with gain 0.02.

U-GAT-IT (Kim et al., ICLR 2020; official PyTorch code znxlwm/UGATIT-pytorch), preset ``ugatit``: generator ngf 64
with 4 residual blocks, full mode by default (``light`` = the official ``--light``), global (7-layer) and local
(5-layer) CAM discriminators with ndf 64; LSGAN adversarial loss (λ 1), cycle λ 10, identity λ 10, CAM λ 1000;
Adam lr 1e-4, β = (0.5, 0.999), weight decay 1e-4 (Adam's L2 form), linear decay to zero over the second half
(per iteration, as the official ``decay_flag``); resize to 286² (bilinear, torchvision's default) · random crop 256
· random flip, without the CUT rule that stops the jitter during the decay; default PyTorch initialisation.
The official run is 1,000,000 iterations; 375 + 375 epochs of max(|A|, |B|) = 1,334 horse2zebra images is 1,000,500.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODES = ("cut", "fastcut", "ugatit")

# Fields that may differ when a run is resumed (they do not change the model or the maths).
RUN_CONTROL_FIELDS = ("a_dir", "b_dir", "out_dir", "max_steps", "time_budget", "num_workers", "print_every", "sample_every",
                      "save_every", "device", "amp", "export_fp16", "n_samples")


@dataclass
class TrainConfig:
    mode: str = "cut"
    a_dir: str = ""
    b_dir: str = ""
    out_dir: str = "runs/cut"
    # networks
    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    n_layers_d: int = 3
    d_antialias: bool = True          # CUT's default discriminator uses blur-pool down-sampling
    init_gain: float = 0.02
    # losses
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    nce_idt: bool = True
    flip_equivariance: bool = False
    nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16)
    num_patches: int = 256
    nce_t: float = 0.07
    netf_nc: int = 256
    # U-GAT-IT only (mode "ugatit")
    light: bool = False               # official --light: the AdaLIN MLP reads pooled features (any size, less memory)
    n_layers_d_global: int = 7
    n_layers_d_local: int = 5
    lambda_adv: float = 1.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 10.0
    lambda_cam: float = 1000.0
    weight_decay: float = 0.0         # Adam L2 weight decay (U-GAT-IT: 1e-4; CUT: none)
    # optimisation
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_epochs: int = 200
    n_epochs_decay: int = 200
    epoch_size: int = 0               # iterations per epoch; 0 = max(|A|, |B|) // batch_size (official)
    batch_size: int = 1
    # data
    load_size: int = 286
    crop_size: int = 256
    no_flip: bool = False
    max_images: int = 0               # 0 = all images of each folder
    # run control
    seed: int = 0
    device: str | None = None
    amp: str = "auto"                 # auto (bf16 / fp16 on CUDA, off elsewhere) | off | bf16 | fp16
    num_workers: int = 4
    print_every: int = 100
    sample_every: int = 1000
    save_every: int = 5000
    n_samples: int = 4
    max_steps: int = 0                # stop after this many iterations in total (0 = the whole schedule)
    time_budget: float = 0.0          # stop after this many seconds of this process (0 = no limit)
    export_fp16: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mode = self.mode.lower()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        self.nce_layers = tuple(int(i) for i in self.nce_layers)
        if self.crop_size > self.load_size:
            raise ValueError(f"crop size {self.crop_size} is larger than load size {self.load_size}")
        if self.crop_size % 4:
            raise ValueError(f"crop size must be a multiple of 4 (the generator halves it twice), got {self.crop_size}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.batch_size < 1 or self.num_patches < 1 or self.nce_t <= 0:
            raise ValueError("batch_size and num_patches must be >= 1 and nce_t > 0")
        if self.mode == "ugatit":
            smallest = 3 * 2 ** (max(self.n_layers_d_global, self.n_layers_d_local) - 2)
            if self.crop_size < smallest:
                raise ValueError(f"crop size must be at least {smallest} for a {self.n_layers_d_global}-layer global "
                                 f"discriminator (its last feature map must stay larger than its padding); got "
                                 f"{self.crop_size}")
            if min(self.n_layers_d_global, self.n_layers_d_local) < 3:
                raise ValueError("U-GAT-IT discriminators need at least 3 layers")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["nce_layers"] = list(self.nce_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay


def preset(mode: str) -> dict[str, Any]:
    """The official per-mode defaults (cut_model.py: CUT vs FastCUT)."""
    mode = mode.lower()
    if mode == "cut":
        return dict(mode="cut", lambda_gan=1.0, lambda_nce=1.0, nce_idt=True, flip_equivariance=False,
                    n_epochs=200, n_epochs_decay=200)
    if mode == "fastcut":
        return dict(mode="fastcut", lambda_gan=1.0, lambda_nce=10.0, nce_idt=False, flip_equivariance=True,
                    n_epochs=150, n_epochs_decay=50)
    if mode == "ugatit":
        return dict(mode="ugatit", n_blocks=4, lr=1e-4, weight_decay=1e-4, n_epochs=375, n_epochs_decay=375,
                    out_dir="runs/ugatit")
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def make_config(mode: str, **overrides: Any) -> TrainConfig:
    """``TrainConfig`` with the preset of ``mode`` and then ``overrides`` (None values are ignored)."""
    values = preset(mode)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)
