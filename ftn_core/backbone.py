"""S-Enc: a torchvision ResNet cut into the paper's stages (paper §3.1).

The paper numbers stages without naming layers; our reading:
stage1 = stem, stage2 = layer1, stage3 = layer2, stage4 = layer3, stage5 = layer4 (stride 1).
"""

from __future__ import annotations

import copy

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ftn_core.errors import FTNError
from ftn_core.init import IMAGENET_WEIGHTS as WEIGHTS
from ftn_core.init import load_into, read_weights, resolve


def _resnet(arch: str) -> torchvision.models.ResNet:
    """A torchvision ResNet, randomly initialised. ``resnet10`` is torchvision's ResNet class
    with one BasicBlock per layer (half of ResNet-18's blocks), the lightest member of the family."""
    if arch == "resnet10":
        return torchvision.models.ResNet(BasicBlock, [1, 1, 1, 1])
    return getattr(torchvision.models, arch)(weights=None)


def _set_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of a ResNet layer's first block (conv2 of a Bottleneck, conv1 of a
    BasicBlock, and its downsample); the weights are unchanged, so ImageNet weights still fit."""
    first = layer[0]
    (first.conv2 if isinstance(first, Bottleneck) else first.conv1).stride = (stride,) * 2
    first.downsample[0].stride = (stride,) * 2


class SEnc(nn.Module):
    """The five stages of a torchvision ResNet, with stage 5's stride set to ``last_stride``.

    ``stage4_stride`` (2 in the paper) is the stride of stage 4 (``layer3``): 1 doubles the
    resolution of the stage-4 map that CFA and TF-Dec see (a 64×32 input then gives 8×4
    instead of 4×2). Our addition for small inputs; the paper's setting is 2.

    ``stage4_channels`` / ``stage5_channels``: 1024 / 2048 for ResNet-50, 256 / 512 for 10/18/34.
    Also builds the local branch's extra block (a copy of stage 5's last block, so it starts
    from the same weights when pretrained).

    ``init`` (``model.init``, ``ftn_core/init.py``): where the weights start; a weights file
    is loaded exactly, the local block too when the file has it. ``init_digest`` is the digest
    of the bytes loaded ("" for a random start). ``load_init=False`` builds the same modules
    without reading the file (for a caller that loads a whole state dict next).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        pretrained: bool = False,
        weights_path: str = "",
        last_stride: int = 1,
        stage4_stride: int = 2,
        init: str = "scratch",
        load_init: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("last_stride", last_stride), ("stage4_stride", stage4_stride)):
            if value not in (1, 2):
                raise FTNError(f"model.{name}={value}: must be 1 or 2")
        if arch not in WEIGHTS:
            raise FTNError(f"model.backbone={arch}: unknown; one of {', '.join(WEIGHTS)}")
        net = _resnet(arch)
        source = resolve(init, arch, pretrained, weights_path) if load_init else None
        state: dict = {}
        self.init_digest = ""
        if source is not None:
            state, self.init_digest = read_weights(source)
            load_into(net, state, source.label, skip=("fc.", "local_block."))
        _set_stride(net.layer3, stage4_stride)
        _set_stride(net.layer4, last_stride)
        self.stage4_stride = 8 * stage4_stride
        """Total stride of the stage-4 map (16 in the paper; TF-Dec upsamples by this)."""
        self.stage1 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stage2, self.stage3, self.stage4, self.stage5 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        last = net.layer4[-1]
        if last.downsample is None:
            self.local_block = copy.deepcopy(last)
        else:  # a single-block stage 5 (resnet10): a fresh block of the same width
            c5 = _out_channels(last)
            self.local_block = type(last)(c5, c5 // type(last).expansion)
        if any(k.startswith("local_block.") for k in state):
            load_into(self.local_block, state, source.label, prefix="local_block.")
        self.stage4_channels = _out_channels(net.layer3[-1])
        self.stage5_channels = _out_channels(net.layer4[-1])


def _out_channels(block: nn.Module) -> int:
    return block.conv2.out_channels if isinstance(block, BasicBlock) else block.conv3.out_channels
