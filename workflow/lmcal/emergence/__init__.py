"""The emergence study: task ladder, stored outputs, re-scoring, emergence analyses (spec "emergence and
scaling-law fits"). Modules: chartok, ladder, outputs, metrics, analysis, forecast, study, report, targets."""
