# Shared setup: config validation, wildcard constraints, the MLflow parent run and the logger that turns the
# jobs' spool records into its child runs (started in onstart, flushed in onsuccess/onerror; lmcal.core.ingest).
# No rules here, and no logic beyond calls into the tested lmcal library.
import lmcal.core.config
import lmcal.core.tracking

lmcal.core.config.validate_config(config)


wildcard_constraints:
    dataset="|".join(config["datasets"]) or "NO_DATASETS",
    model="[A-Za-z0-9_.+-]+",
    size="|".join(config["ladder"]["sizes"]) or "NO_SIZES",


onstart:
    lmcal.core.tracking.start_parent(config)


onsuccess:
    lmcal.core.tracking.finish_parent("FINISHED")


onerror:
    lmcal.core.tracking.finish_parent("FAILED")
