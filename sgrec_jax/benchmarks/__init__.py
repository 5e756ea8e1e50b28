"""Speed figures of this machine and of the generator, measured in one run (not a test);
`python -m experiments.benchmark` runs them (`benchmarks.run.run_benchmark`) with the sizes of
experiments/configs/benchmark.py.

Sections (`sections`, run in the order given; default all):
  matmul   the machine's float32 matmul throughput: jitted n x n matmuls, best of several;
  sft      SFT train-step throughput (examples/s) of the encoder-decoder with the real jitted step
           (`create_train_state`, `make_train_step`, `sft_loss`), its FLOPs per example as XLA's
           cost analysis of the compiled step counts them (forward + backward + optimizer), and
           the achieved FLOP rate as a fraction of the matmul throughput; per history encoding
           ("item": one token per history item, "code": one per code);
  rl       one jitted RL step (`rl.grpo.make_rl_step`: rollout of G candidates per request,
           pi_old and pi_ref scoring, rewards, A2PO advantages, one clipped policy update) in
           completions/s (requests x G per second), requests/s, and as a fraction of the matmul
           throughput; channels "rank" (business) and the cosine of random unit item embeddings
           (semantic); split into rollout, reward (+ advantages) and update time, the first two
           jitted and timed alone, the update the rest of the step;
  beam     constrained beam-search throughput (users/s, top-k of the whole catalog) of the jitted
           decode that `serving.Recommender` runs, per encoding and beam width;
  catalog  the same beam search (first encoding, widest beam) over synthetic catalogs of
           `catalog_sizes` items (random codes + dedup level): users/s, trie build time, trie
           and SID-table bytes per item, and their growth from the smallest to the largest;
  pallas   the Pallas advantage kernel versus the same math in plain XLA
           (`rl.pallas_advantage.benchmark_advantages`); on CPU Pallas runs in interpret mode;
  buckets  SFT examples/s of the real loop's input (`data.pipeline.train_iterator`) with and
           without `length_buckets`, over histories whose lengths are geometric with mean
           `mean_history` (Beauty's training histories: mean 6.7 items, median 4, of 20 slots)
           capped at `history`: padded full-width batches vs batches cut to their bucket's
           width (every width compiled before timing);
  scaling  SFT examples/s on 1, 2, 4, 8 devices: the sft section in a subprocess per
           count with XLA_FLAGS=--xla_force_host_platform_device_count=N (on a CPU host these are
           fake devices sharing its cores, so this measures the cost of the data-parallel
           program, collectives included, not a speed-up).
The catalog of the sft/beam sections has `num_items` items with random codes on `levels`
levels of `codebook_size`, plus the dedup level. The matmul throughput is measured again just
before each timed part and each fraction uses that figure, so on a shared machine the fractions
stay meaningful when the absolute rates do not. The load average at the start and end is
recorded too. The generator computes in `dtype` ("bfloat16" on a GPU or TPU; parameters stay
float32). The config arg `quick` gives tiny sizes (seconds; the test runs them).
device_check.py builds on these sections: one run that checks an accelerator (see there).

"""
