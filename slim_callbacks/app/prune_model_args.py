"""The ``slim-callbacks prune-model`` arguments and command (the work is in
:mod:`slim_callbacks.app.prune_model`, imported only when the command runs)."""
from __future__ import annotations

import sys

EXAMPLE = ["slim-callbacks prune-model exported/ --target macs=0.5 --data images/ --epochs 3 "
           "--out pruned/",
           "slim-callbacks prune-model exported/ --target macs=0.5 --data images/ --epochs 5 "
           "--out pruned/ --resume"]


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL_DIR",
                   help="an exported inference model: a directory holding model.json + "
                        "model.pdiparams, or their prefix")
    p.add_argument("--out", required=True,
                   help="a new (or empty) directory for the pruned model, summary.json and "
                        "the fine-tune's checkpoints")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished run in --out from its last saved fine-tune "
                        "epoch (same --target, --criterion, --strategy; --epochs may grow)")
    p.add_argument("--target", default="macs=0.5",
                   help="macs=R (remove the share R of the MACs, uniform ratio) or latency=R "
                        "(of the batch-1 latency, measured on this machine); default macs=0.5")
    p.add_argument("--data", metavar="IMAGES",
                   help="a folder of images (no labels): 20%% held out to measure fidelity, "
                        "the rest to fine-tune on; preprocessed as the export's inference.yml "
                        "says, else resized, center-cropped and normalized with the ImageNet "
                        "mean and std (--mean, --std, --no-crop change that)")
    p.add_argument("--mean", type=float, nargs="+", help="per-channel mean of pixels in [0, 1]")
    p.add_argument("--std", type=float, nargs="+", help="per-channel std of pixels in [0, 1]")
    p.add_argument("--no-crop", action="store_true",
                   help="resize images to the input size instead of resize + center crop")
    p.add_argument("--epochs", type=int, default=0,
                   help="label-free fine-tune epochs, distilling the original (default 0: "
                        "prune only)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tune learning rate (Momentum)")
    p.add_argument("--batch-size", type=int, default=16, help="fine-tune batch size")
    p.add_argument("--criterion", default="l1_norm", help="which channels go (default l1_norm)")
    p.add_argument("--strategy",
                   help="how the target becomes ratios: uniform (the default for macs), global "
                        "or sensitive (macs too; sensitive measures each layer's sensitivity "
                        "without labels, as the output distance to the original on the "
                        "held-out images) or latency (the default for latency)")
    p.add_argument("--structure", action="append", metavar="KEY=VALUE",
                   help="what a pruning unit spans where layers allow several shapes, e.g. "
                        "attention=heads or grouped_conv=groups (repeatable)")
    p.add_argument("--input-shape", type=int, nargs="+", metavar="DIM",
                   help="the input shape with batch 1, if the export's is dynamic beyond "
                        "the batch")
    p.add_argument("--no-latency", action="store_true",
                   help="do not measure the latency of the original and the pruned model")


def cmd_prune_model(args) -> int:
    """Progress notes and bars on stderr (none with --quiet), the before/after table on
    stdout."""
    from slim_callbacks.app.image_inputs import Preprocessing
    from slim_callbacks.app.prune_model import prune_model, summary_text
    prep = None
    if args.mean or args.std or args.no_crop:
        default = Preprocessing.from_export(args.model)
        prep = Preprocessing(tuple(args.mean or default.mean), tuple(args.std or default.std),
                             default.crop and not args.no_crop)

    def note(text):
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)
    summary = prune_model(args.model, args.out, args.target, data=args.data, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, criterion=args.criterion,
                          strategy=args.strategy, structure=args.structure,
                          input_shape=args.input_shape, preprocessing=prep,
                          latency=not args.no_latency, resume=args.resume,
                          progress=False if args.quiet else None, emit=note)
    print(summary_text(summary), flush=True)
    return 0
