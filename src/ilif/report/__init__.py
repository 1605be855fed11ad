"""Reports: tables (markdown + csv) and figures (png) from run directories only."""
