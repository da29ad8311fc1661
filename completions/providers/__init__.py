"""Upstream providers behind one small interface (base.Provider), chosen by registry.route."""
