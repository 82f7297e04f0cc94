# Two commands do everything on a fresh machine:
#   make demo   set up, train the teacher, the KD student and the student alone, evaluate (Fashion-MNIST, CPU)
#   make test   set up, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup dataset demo compress tune seeds seeds-full test clean-runs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first, from pip (not uv/poetry): a local wheel cache is honoured this way.
	$(PY) -m pip install --quiet "torch>=2.4" "torchvision>=0.19"
	$(PY) -m pip install --quiet -e ".[test,compress,quantize,trees,tune,tabular]"
	touch $@

setup: $(VENV)/.installed dataset

# Debian's dataset-fashion-mnist makes the default dataset work offline; elsewhere torchvision downloads it.
dataset:
	@if [ -d $(FASHION_MNIST) ]; then echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST package not installed (needs apt-get as root); it will be downloaded by torchvision."; fi

# teacher; KD student and the same student alone (alpha=0), one thread each, at once; the report comparing all three
demo: setup
	PYTHON=$(PY) scripts/demo.sh

# On top of make demo's checkpoints: the student pruned and fine-tuned against the teacher, then student, pruned
# student and teacher as ONNX fp32 and int8, measured side by side, one artifact recommended.
compress: setup
	$(PY) -m distill.train prune --overwrite true
	$(PY) -m distill.train qat --overwrite true
	$(PY) -m distill.train qat --overwrite true --model.source_ckpt checkpoints/pruned/best.ckpt --run_dir checkpoints/qat_pruned
	$(PY) -m distill.compress --ckpt checkpoints/student/best.ckpt checkpoints/pruned/best.ckpt checkpoints/qat/best.ckpt \
		checkpoints/qat_pruned/best.ckpt --teacher checkpoints/teacher/best.ckpt --precision int8 fp16 \
		--out_dir checkpoints/compressed

# On top of make demo's teacher: a 12-trial Bayesian (TPE) search of the student's lr, weight decay, temperature
# and alpha, 3 epochs a trial, 2 at a time; resumable (run it again), report in checkpoints/tune/student.
tune: setup
	$(PY) -m distill.tune student --space tune/student.yaml --trials 12 --jobs 2 --out checkpoints/tune/student

# Does KD pay off? Teacher once, then KD student / same student alone / its best recipe alone, 3 seeds each.
seeds: setup
	$(PY) scripts/seeds.py --seeds 3 --jobs 2 --out checkpoints/seeds_demo \
		--alone_config teachers/fashion_mnist/cnn_mini-alone.yaml

seeds-full: setup
	$(PY) scripts/seeds.py --seeds 3 --jobs 2 --out checkpoints/seeds_full \
		--teacher_config teachers/fashion_mnist/cnn_deep-full.yaml \
		--student_config teachers/fashion_mnist/cnn_deep-full-to-cnn_mini.yaml \
		--alone_config teachers/fashion_mnist/cnn_mini-alone-full.yaml

test: setup
	$(PY) -m pytest -q

clean-runs:
	rm -rf checkpoints/teacher checkpoints/student checkpoints/student_alone checkpoints/student_alone.log
