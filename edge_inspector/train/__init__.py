"""Training of the station's default defect model (optional extra ``train``: torch, imported lazily).

    python -m edge_inspector.train --out runs/attn            # or: edge-inspector train ...

- ``net``: plain U-Net and Attention U-Net sharing one encoder/decoder definition.
- ``data``: training patches: synthetic hides at station scale, real leather texture with
  synthetic defects pasted in, real labelled defects (boxes as weak labels).
- ``loop``: BCE + Dice on the defect mask, cross-entropy on the class, box-projection loss for
  the weak labels; validation; checkpoints.
- ``export``: ONNX with the model contract (uint8 NHWC in, class_map + score_map out), fp16 variant.

The runtime never imports this package.
"""
