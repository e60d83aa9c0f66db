"""Outputs people read: NIfTI and table exports of an analysis, plots (funnel, scatter,
glass brain, stability), the summary with its methods paragraph, and the citations."""
