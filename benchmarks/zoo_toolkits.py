"""Full models of PaddleDetection and PaddleNLP for ``bench_zoo.py --toolkits``.

    pip install paddledet==2.6.0 paddlenlp==2.8.1 --no-deps   # plus their few imports,
    # see docs/guides/detector.md and docs/guides/nlp.md

Built from the toolkits' own classes, with random weights (no download):

- ``PPYOLOE_s``: ``CSPResNet`` + ``CustomCSPPAN`` + ``PPYOLOEHead`` in ppdet's
  ``YOLOv3`` architecture, width 0.5 and depth 0.33 as in ``ppyoloe_crn_s``, 80
  classes, a 320x320 image;
- ``ERNIE_small`` and ``BERT_small``: ``...ForSequenceClassification`` with 4 layers,
  hidden 256, 4 heads, FFN 1024, vocabulary 1000, 3 classes, 64 tokens.

Each model sits in a wrapper that takes one float32 tensor and makes the model's own
inputs from it (the detector's dict with ground-truth boxes, or token ids), so
``prune``, ``count_flops`` and ``export`` take an ``input_shape``. Per model, as for
the PaddleClas rows: MACs cut at the ratio, prune time, exactness with dead channels
(the detector's head outputs before NMS are compared; LayerNorm groups apart), one
Momentum step on the model's own training loss, and an export verified against the
dygraph outputs (the detector's without NMS: ppdet 2.6's ``multiclass_nms3`` is a
legacy static op that Paddle 3's PIR cannot save).
"""
import math
import os
import tempfile
import time

MODELS = ("PPYOLOE_s", "ERNIE_small", "BERT_small")
DETECTOR_SIZE, TOKENS, VOCAB = 320, 64, 1000


# ------------------------------------------------------------------ builders
def ppyoloe_s(num_classes: int = 80):
    """PP-YOLOE-s from ``ppdet.modeling`` parts (``configs/ppyoloe/ppyoloe_crn_s``)."""
    from ppdet.modeling.architectures import YOLOv3
    from ppdet.modeling.assigners import ATSSAssigner, TaskAlignedAssigner
    from ppdet.modeling.backbones.cspresnet import CSPResNet
    from ppdet.modeling.heads.ppyoloe_head import PPYOLOEHead
    from ppdet.modeling.layers import MultiClassNMS
    from ppdet.modeling.necks.custom_pan import CustomCSPPAN
    backbone = CSPResNet(layers=[3, 6, 6, 3], channels=[64, 128, 256, 512, 1024],
                         return_idx=[1, 2, 3], use_large_stem=True, width_mult=0.5, depth_mult=0.33)
    neck = CustomCSPPAN(in_channels=[s.channels for s in backbone.out_shape],
                        out_channels=[768, 384, 192], stage_num=1, block_num=3, act="swish",
                        spp=True, width_mult=0.5, depth_mult=0.33)
    head = PPYOLOEHead(in_channels=[s.channels for s in neck.out_shape], num_classes=num_classes,
                       fpn_strides=[32, 16, 8], static_assigner_epoch=100,
                       static_assigner=ATSSAssigner(topk=9, num_classes=num_classes),
                       assigner=TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0),
                       nms=MultiClassNMS(nms_top_k=1000, keep_top_k=300, score_threshold=0.01,
                                         nms_threshold=0.7))
    return YOLOv3(backbone=backbone, neck=neck, yolo_head=head, post_process=None)


def detector_batch(image, boxes: int = 3, num_classes: int = 80):
    """ppdet's input dict for ``image`` with ``boxes`` seeded ground-truth boxes."""
    import paddle
    b, _, h, _ = image.shape
    rng = paddle.get_rng_state()
    paddle.seed(1)
    corner = paddle.rand([b, boxes, 2]) * (h / 2)
    classes = paddle.randint(0, num_classes, [b, boxes, 1]).astype("int64")  # int32 fails
    paddle.set_rng_state(rng)
    return {"image": image, "im_shape": paddle.full([b, 2], float(h)),
            "scale_factor": paddle.ones([b, 2]), "gt_bbox": paddle.concat([corner, corner + h / 4], -1),
            "gt_class": classes, "pad_gt_mask": paddle.ones([b, boxes, 1]), "epoch_id": 0,
            "im_id": paddle.zeros([b, 1], "int64"), "curr_iter": 0}


def nlp_classifier(kind: str, classes: int = 3):
    """A small ERNIE or BERT sequence classifier from a paddlenlp config."""
    from paddlenlp import transformers as T
    config = dict(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024, max_position_embeddings=128, num_classes=classes)
    if kind == "ERNIE_small":
        return T.ErnieForSequenceClassification(T.ErnieConfig(**config))
    return T.BertForSequenceClassification(T.BertConfig(**config))


def wrapped(name: str):
    """``(network taking one float32 tensor, its input shape, loss of a train-mode
    output, the eval outputs compared for exactness)``."""
    import paddle
    import paddle.nn.functional as F

    if name == "PPYOLOE_s":
        class Detector(paddle.nn.Layer):
            def __init__(self):
                super().__init__()
                self.det = ppyoloe_s()

            def forward(self, image):
                out = self.det(detector_batch(image))
                return out["loss"] if self.training else (out["bbox"], out["bbox_num"])

        net = Detector()
        for conv in [*net.det.yolo_head.pred_cls, *net.det.yolo_head.pred_reg]:
            conv.weight.set_value(paddle.randn(conv.weight.shape) * 0.01)  # ppdet inits them to 0
        return net, [1, 3, DETECTOR_SIZE, DETECTOR_SIZE], lambda out: out, head_outputs(net.det.yolo_head)

    class Classifier(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.model = nlp_classifier(name)

        def forward(self, x):
            ids = (x.abs() * 100).astype("int64") % VOCAB
            return self.model(ids, token_type_ids=paddle.zeros_like(ids))

    def loss(logits):
        return F.cross_entropy(logits, paddle.arange(logits.shape[0]) % 3)
    return Classifier(), [1, TOKENS], loss, None


def head_outputs(head):
    """A function ``(net, x) -> numpy`` of the head's class scores and box
    distances before NMS (read with a forward hook)."""
    import numpy as np
    import paddle
    seen = []
    head.register_forward_post_hook(lambda layer, inputs, out: seen.append(out))

    def outputs(net, x):
        seen.clear()
        net.eval()
        with paddle.no_grad():
            net(x)
        return np.concatenate([t.numpy().ravel() for t in seen[-1][:2]])
    return outputs


# ------------------------------------------------------------------ one model
def measure(name: str, ratio: float, structure=None) -> dict:
    """The bench_zoo row of one toolkit model (see the module docstring)."""
    import numpy as np
    import paddle
    from helpers import calibrate, kept_channels, kill_units, layer_norms_over, outputs

    from slim_callbacks import count_flops, explain, export, prune, trace

    paddle.seed(0)
    net, shape, loss_of, compared = wrapped(name)
    compared = compared or outputs
    row = {"model": name, "family": "ppdet" if name == "PPYOLOE_s" else "paddlenlp",
           "input": shape[-1], "macs": count_flops(net, shape)}
    report = explain(net, shape)
    top = report.by_op()[:1]
    row["top_blocker"], row["top_blocker_share"] = (top[0][0], top[0][2] / report.total_macs) if top else ("", 0.0)
    calibrate(net, shape)
    graph = trace(net, shape, structure)
    dead = kill_units(net, graph, ratio=ratio)
    exact_groups = [g.name for g in graph.prunable_groups() if not g.approximate]
    row["approximate_groups"] = len(graph.prunable_groups()) - len(exact_groups)
    x = paddle.randn([1] + shape[1:])
    before = compared(net, x)
    if row["approximate_groups"]:
        import copy
        exact_net = copy.deepcopy(net)
        with layer_norms_over(net, kept_channels(net, graph, dead)):
            reference = compared(net, x)
    start = time.perf_counter()
    prune(net, shape, ratio, structure=structure)
    row["prune_s"] = time.perf_counter() - start
    row["macs_cut"] = 1 - count_flops(net, shape) / row["macs"]
    if row["approximate_groups"]:
        row["ln_diff"] = float(np.abs(compared(net, x) - reference).max())
        row["ln_exact"] = row["ln_diff"] <= 1e-4 * max(1.0, float(np.abs(reference).max()))
        prune(exact_net, shape, {g: ratio for g in exact_groups}, structure=structure)
        after = compared(exact_net, x)
    else:
        after = compared(net, x)
    row["max_diff"] = float(np.abs(after - before).max())
    row["exact"] = row["max_diff"] <= 1e-4 * max(1.0, float(np.abs(before).max()))
    row["trains"] = trains_one_step(net, shape, loss_of)
    if name == "PPYOLOE_s":  # ppdet 2.6's NMS is a legacy static op that PIR cannot save
        net.det.yolo_head.exclude_nms = True  # boxes and scores before NMS
    with tempfile.TemporaryDirectory() as out:
        try:
            result = export(net, os.path.join(out, "model"), shape)
            row["export"] = f"verified ({max(result.max_abs_diff.values()):.1e})"
        except Exception as err:  # the row says why
            row["export"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
    row["status"] = "ok"
    return row


def trains_one_step(net, shape, loss_of) -> bool:
    """One Momentum step in train mode on a batch of two: the loss is finite."""
    import paddle
    net.train()
    optimizer = paddle.optimizer.Momentum(0.001, parameters=net.parameters())
    loss = loss_of(net(paddle.randn([2] + shape[1:])))
    loss.backward()
    optimizer.step()
    net.eval()
    return bool(math.isfinite(float(loss)))
