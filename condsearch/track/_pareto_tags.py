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
        """Tag every run in `on_front` true/false (plus `extra` tags); return runs written."""
        extra = extra or {}
        written = 0
        for run_id in set(on_front) | set(extra):
            tags = dict(extra.get(run_id, {}))
            if run_id in on_front:
                value = "true" if on_front[run_id] else "false"
                if self.current.get(run_id) != value:
                    tags[PARETO_TAG] = value
            if tags:
                from mlflow.entities import RunTag

                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
                self.current[run_id] = tags.get(PARETO_TAG, self.current.get(run_id, ""))
                written += 1
        return written
