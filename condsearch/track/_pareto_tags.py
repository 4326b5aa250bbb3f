"""Keep each run's `condsearch.pareto` tag current, writing only the tags that change."""

from __future__ import annotations

PARETO_TAG = "condsearch.pareto"
FEASIBLE_TAG = "condsearch.feasible"


class ParetoTagger:
    """Remembers the tag each run carries so a new trial costs O(changed runs) tag writes."""

    def __init__(self, uri: str, experiment_id: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.current: dict[str, str] = {}
        self._pending: dict[str, dict[str, str]] = {}
        self._load(experiment_id)

    def _load(self, experiment_id: str) -> None:
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{PARETO_TAG}` != ''",
                max_results=1000, page_token=token,
            )
            for run in page:
                self.current[run.info.run_id] = run.data.tags.get(PARETO_TAG, "")
            token = page.token
            if not token:
                break

    def update(self, on_front: dict[str, bool], extra: dict[str, dict[str, str]] | None = None
               ) -> int:
        """Tag every run in `on_front` true/false (plus `extra` tags) where that changes what
        the run carries; return runs written. Writes MLflow failed to take are retried here."""
        from mlflow.entities import RunTag

        extra = extra or {}
        writes, self._pending = self._pending, {}
        for run_id in set(on_front) | set(extra):
            tags = writes.setdefault(run_id, {})
            tags.update(extra.get(run_id, {}))
            if run_id in on_front:
                value = "true" if on_front[run_id] else "false"
                if self.current.get(run_id) != value:
                    tags[PARETO_TAG] = value
                else:  # back to what the run carries: a failed write of another value is moot
                    tags.pop(PARETO_TAG, None)
        todo = [(run_id, tags) for run_id, tags in writes.items() if tags]
        for i, (run_id, tags) in enumerate(todo):
            try:
                if len(tags) == 1:  # the usual case; set_tag is one store session, not two
                    self.client.set_tag(run_id, *next(iter(tags.items())))
                else:
                    self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            except Exception:
                self._pending = dict(todo[i:])
                raise
            if PARETO_TAG in tags:
                self.current[run_id] = tags[PARETO_TAG]
        return len(todo)
