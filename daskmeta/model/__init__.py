"""The data model: the study set (tables of studies and peaks), the MNI 2 mm grid and its masks,
and the coordinate spaces peaks arrive in (docs/methods.md, sections 1 and 3)."""
