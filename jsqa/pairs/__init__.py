"""JND audio pairs: the only place the positive-pair rule lives.

A *positive pair* is one clean speech segment mixed with one noise segment at two SNRs that a
listener cannot tell apart: ``|snr_a - snr_b| < jnd_db`` (about 3 dB for speech in noise,
McShefferty et al. 2015). A *clean anchor* pair has ``snr_a = +inf`` (the clean segment) and
``snr_b`` in ``[snr_hi, snr_hi + jnd_db)``, i.e. noise too faint to be noticed against clean.
With ``pairs.distortions`` enabled, a pair may also carry one distortion beyond noise
(:mod:`jsqa.signal.distortions`), applied to both members after mixing with one seed; the pair stays
positive only if its two parameters are also within that distortion's step
(:func:`jsqa.signal.distortions.within_step`). The recipes then have :data:`jsqa.pairs.render.DISTORTION_COLUMNS`
("none" / 0 for undistorted pairs); with all distortions off they are absent, so plans,
recipes and shards are exactly those of a noise-only run.
SNR is defined in :mod:`jsqa.signal.levels`: speech active level (set on the whole utterance to
``pairs.speech_level_dbov``) minus the RMS level of the scaled noise over the segment.

Stages:

* :func:`plan_pairs` makes every random choice, deterministically from (seed, utterance index),
  so the plan does not depend on the number of workers or on other utterances.
* :func:`render_pair` turns one recipe row plus audio into the two members; it draws nothing.
  It and the shard renderer live in :mod:`jsqa.pairs.render`, the light module pool workers
  import.
* :func:`generate_pairs` plans, renders shards in parallel (resumable), and writes the pair set;
  :func:`load_pairs` / :class:`PairSet` read it back for training.

Layout of ``out_dir``: ``plan.parquet``; per shard ``shard-NNNNN.npy`` (int16
``[n, 2, segment_samples]``), ``shard-NNNNN.json`` (render settings and skipped pairs) and
``shard-NNNNN.arrow`` (its recipes with gains, an Arrow IPC file, written last: the shard's
completion mark); then ``skipped.csv``, ``pairs.parquet`` (all recipes) and ``index.json``.
Shards are rendered in ``<out_dir>.partial/`` beside it (:func:`jsqa.pairs.generate.partial_dir`,
not a DVC output, so a killed ``dvc repro`` keeps them) and moved into ``out_dir`` once all are
finished.
"""
