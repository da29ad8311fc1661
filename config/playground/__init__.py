"""The playground: one page at /playground that tries Engram from a browser.

A Django template, a stylesheet and a vanilla script (static/playground/), no build step and
nothing from another origin. The page loads without a key; every data call it makes goes to
the public API with the workspace key the visitor pastes (kept in sessionStorage only).
"""
