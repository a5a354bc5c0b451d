"""Figure builders (seaborn/matplotlib, Agg backend); each module draws one study's figures and returns Figures."""
