"""Model recipes, one file each; :mod:`models.registry` lists them and picks defaults."""
