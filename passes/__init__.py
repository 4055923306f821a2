"""Graph passes of oqcompile, one module per pass (installed as ``oqcompile.passes``)."""
