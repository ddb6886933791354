"""A torchvision ResNet with random weights and BN statistics, its state_dict as
safetensors, an input batch and its C5 output (eval mode, and train mode with batch
statistics). Usage: resnet_reference.py ARCH DIR. Writes DIR/weights.safetensors,
DIR/input.f32 ([4, 3, 128, 128]), DIR/c5_eval.f32, DIR/c5_train.f32; prints the C5 shape."""
import json
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file

arch, root = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = getattr(torchvision.models, arch)()
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial BN everywhere
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
body = torch.nn.Sequential(*list(model.children())[:-2])  # up to C5, no pooling
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(root, "weights.safetensors"))
x = torch.randn(4, 3, 128, 128)
x.numpy().tofile(os.path.join(root, "input.f32"))
with torch.no_grad():
    body.eval()
    c5 = body(x)
    c5.numpy().tofile(os.path.join(root, "c5_eval.f32"))
    body.train()
    body(x).numpy().tofile(os.path.join(root, "c5_train.f32"))
print(json.dumps(list(c5.shape)))
