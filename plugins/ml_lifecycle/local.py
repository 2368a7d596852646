"""The ``local`` backend: the project's job files run in the worker process, on this machine.

The collect job (``include/jobs/collect_and_label.py``) and the training script
(``include/jobs/train.py``, the SageMaker script-mode contract: ``SM_CHANNEL_*``, ``SM_MODEL_DIR``,
``SM_OUTPUT_DATA_DIR``, ``SM_NUM_CPUS``) are the very files the ``aws`` backend runs on Glue and
SageMaker. Trials are capped (``trial_slots``) and each gets its share of the cores.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from include.lifecycle.layout import CollectSummary
from include.lifecycle.store import Store
from ml_lifecycle.backend import Backend
from ml_lifecycle.settings import artifact_root, pii_key, trial_slots, trial_threads


class LocalBackend(Backend):
    name = "local"

    def store(self) -> Store:
        root = artifact_root() / self.spec.name
        return Store(root.fs, root.path)

    def input_store(self, uri: str) -> Store:
        return Store.from_uri(uri)

    def trial_concurrency(self) -> int | None:
        return trial_slots()

    def collect(self, op: Any, rc: Any, context: Any, *, lookback_days: int, run_dir: str) -> CollectSummary:
        from include.jobs import collect_and_label
        from include.lifecycle.spec import spec_path

        argv = [
            "--spec", str(spec_path(rc.spec.name)),
            "--artifact-root", rc.store.uri(),
            "--run-dir", run_dir,
            "--as-of", rc.as_of.isoformat(),
            "--lookback-days", str(lookback_days),
        ]  # fmt: skip
        return collect_and_label.main(argv, pii_key=pii_key(), log=op.log.info)

    def train_trial(self, op: Any, rc: Any, context: Any, round_no: int, trial: dict[str, Any]) -> dict[str, Any]:
        from include.jobs import train as train_job

        rnd = rc.layout.round(round_no)
        plan = rc.store.read_json(rnd.plan)
        trial_rel = rnd.trial(trial["trial_id"])
        with tempfile.TemporaryDirectory(prefix="sm-") as tmp:
            channels = {}
            for split in ("train", "validation"):
                rel = rnd.channel(split)
                if rc.store.is_local:
                    channels[split] = rc.store.path(rel)
                else:  # stage the channel like SageMaker does (/opt/ml/input/data/<channel>)
                    channels[split] = str(Path(tmp, "input", split))
                    for name in rc.store.ls(rel):
                        rc.store.download(f"{rel}/{name}", str(Path(channels[split], name)))
            env = {
                "SM_CHANNEL_TRAIN": channels["train"],
                "SM_CHANNEL_VALIDATION": channels["validation"],
                "SM_MODEL_DIR": str(Path(tmp, "model")),
                "SM_OUTPUT_DATA_DIR": str(Path(tmp, "output")),
                "SM_NUM_CPUS": str(trial_threads()),  # this trial's share of the cores
            }
            result = train_job.main(train_job.hyperparameter_args(rc.spec, plan, trial), env=env, log=op.log.info)
            for folder in ("model", "output"):
                for f in sorted(Path(tmp, folder).iterdir()):
                    rc.store.copy_in(str(f), f"{trial_rel}/{folder}/{f.name}")
            shutil.rmtree(Path(tmp, "model"), ignore_errors=True)
        result["model_rel"] = rnd.trial_model(trial["trial_id"])
        result["round"] = round_no
        return result

    def score_batch(self, op: Any, rc: Any, context: Any, ds: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        from include.lifecycle.registry import ChecksumError, ModelRegistry
        from include.lifecycle.scoring import NoChampion, load_champion, score_partition
        from include.lifecycle.spec import resolve_source

        try:
            champion = load_champion(ModelRegistry(rc.store, rc.spec.name), rc.spec.name)
        except (NoChampion, ChecksumError) as exc:
            raise AirflowFailException(f"cannot score ds={ds}: {exc}") from exc
        source = self.input_store(resolve_source(rc.spec.data.source))
        try:
            scores, summary = score_partition(rc.spec, champion, source=source, ds=ds, pii_key=pii_key())
        except FileNotFoundError as exc:
            raise AirflowFailException(str(exc)) from exc
        extra = {"source_uri": source.uri(f"ds={ds}"), "champion_deployed_at": champion.record.get("deployed_at")}
        return scores, summary, extra

    def publish_champion(self, rc: Any, version: int, *, log: Any) -> dict[str, Any]:
        """A running local endpoint (``make serve``) loads the new champion now; it also polls."""
        from ml_lifecycle.endpoint import notify_serving

        return {"serving": notify_serving(rc.spec.name, version)}
