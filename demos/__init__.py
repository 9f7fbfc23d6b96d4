"""The app's tabs. Each module exposes ``build(ctx)``, called inside its ``gr.Tab``. No torch here: tabs call engine
functions that take and return numpy arrays / PIL images."""
