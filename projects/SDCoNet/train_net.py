#!/usr/bin/env python
"""SDCoNet and detectron2 baselines: training and evaluation with detectron2 (a simplified ``tools/train_net.py``).

    python projects/SDCoNet/train_net.py --config-file projects/SDCoNet/configs/quick_synthetic.yaml MODEL.DEVICE cpu
    python projects/SDCoNet/train_net.py --config-file <cfg> --num-gpus 8            # single machine, 8 GPUs
    python projects/SDCoNet/train_net.py --config-file <cfg> --resume                 # continue from last_checkpoint
    python projects/SDCoNet/train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <ckpt.pth>

The same script trains detectron2's own detectors on the same LR splits (``configs/baselines``, detectron2's recipe)
and those with the SR add-on (``MODEL.SR_BRANCH.ENABLED``).

Multi-machine: run the same command on every machine with ``--num-machines N --machine-rank r
--dist-url tcp://<host of rank 0>:<port>``. ``SOLVER.IMS_PER_BATCH`` is the total batch over all GPUs.
"""

import logging
import os
import sys

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from sdconet.d2 import SDCoNetTrainer, load_cfg, resolve_cfg  # import registers models, backbones, datasets
from sdconet.d2.checkpoint import SDCoNetCheckpointer
from sdconet.d2.evaluation import append_metrics_json
from sdconet.engine.checkpoint_policy import (
    CheckpointMismatchError,
    CheckpointReadError,
    NonFiniteWeightsError,
)


def setup(args):
    """Config: the recipe's defaults (SDCoNet's, or detectron2's for other meta-architectures) + plugin keys + file +
    command-line opts; derived keys resolved; frozen; logged."""
    cfg = load_cfg(args.config_file, args.opts)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sdconet")
    resolve_cfg(cfg, count_images=not args.eval_only)  # derived keys land in OUTPUT_DIR/config.yaml
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    log = logging.getLogger("sdconet")
    if args.eval_only:
        model = SDCoNetTrainer.build_model(cfg)
        ckpt = SDCoNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR, eval_only=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = SDCoNetTrainer.test(cfg, model)
        if comm.is_main_process():
            # the same keys as the training's evaluations (bbox/AP, ...; <dataset>/bbox/AP with several datasets)
            append_metrics_json(cfg.OUTPUT_DIR, res, (ckpt or {}).get("iteration"))
            verify_results(cfg, res)
            log.info("Report: %s", os.path.join(cfg.OUTPUT_DIR, "report.md"))
        return res
    trainer = SDCoNetTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    log.info("Training from iteration %d of %d", trainer.start_iter, trainer.max_iter)
    res = trainer.train()
    if comm.is_main_process() and cfg.DATASETS.TEST:
        log.info("Report: %s", os.path.join(cfg.OUTPUT_DIR, "report.md"))
    return res


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (CheckpointReadError, CheckpointMismatchError, NonFiniteWeightsError) as exc:
        sys.stderr.write(f"error: {exc}\n")  # one line naming the checkpoint, not a traceback
        sys.exit(2)


if __name__ == "__main__":
    invoke_main()  # pragma: no cover
