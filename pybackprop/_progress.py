"""A progress bar for long fits, as a callback: nothing prints unless asked for."""


class ProgressBar:
    """Callback drawing a tqdm bar over the epochs, with the loss and, under early
    stopping, the validation score.

    >>> from pybackprop import MLPClassifier, ProgressBar
    >>> clf = MLPClassifier(callbacks=[ProgressBar()])      # doctest: +SKIP

    Without tqdm installed, it prints one plain line per epoch instead.
    Extra keyword arguments go to ``tqdm.tqdm``.
    """

    def __init__(self, **tqdm_kwargs):
        self.tqdm_kwargs = tqdm_kwargs
        self._bar = None

    def _open(self, total):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        kwargs = {"total": total, "unit": "epoch", "leave": True, **self.tqdm_kwargs}
        return tqdm(**kwargs)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __call__(self, est, info):
        if info["epoch"] == 1 or self._bar is None:
            self.close()
            self._bar = self._open(getattr(est, "max_iter", None))
        figures = {"loss": f"{info['loss']:.5f}"}
        if info.get("validation_score") is not None:
            figures["val"] = f"{info['validation_score']:.4f}"
        if self._bar is None:
            print(f"epoch {info['epoch']}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        else:
            self._bar.update(1)
            self._bar.set_postfix(figures, refresh=False)
            if info["epoch"] >= getattr(est, "max_iter", float("inf")):
                self.close()
        return False

    def __getstate__(self):
        # a bar is a terminal handle, not model state
        return {"tqdm_kwargs": self.tqdm_kwargs, "_bar": None}
