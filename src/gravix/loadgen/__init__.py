"""Synthetic traffic for Gravix: a traffic model (``traffic``) and an HTTP sender (``sender``).

It talks to the intake over HTTP only, like any other client, so it drives a
local server or a remote deployment the same way (``gravix loadgen``).
"""
