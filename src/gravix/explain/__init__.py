"""What changed: which services, routes, versions ... account for a change (issue #21).

``score`` ranks the elements of each dimension by how much of a change of an
additive measure they explain and how surprising their share is, as
Adtributor does (Bhagwan et al., NSDI 2014), with MacroBase's support and
risk ratio filters.
"""
