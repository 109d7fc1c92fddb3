"""How the files of tests/data/hostile/{sweep,base,site}/ were made (they are kept in the repository; run this
again only to add cases, then list each new file in manifest.json with the key its error must name).

    python tests/data/hostile/make_corpus.py
"""
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent
for sub in ("sweep", "base", "site"):
    (ROOT / sub).mkdir(parents=True, exist_ok=True)

GOOD_SWEEP = '''[sweep]
name = "hostile"
program = "generic"
base = "configs/.base_config.toml"
command = "cat {config}"
site = "local"

[grid]
lr = [0.1, 0.2]

[log]
path = "train.log"
epoch = "epoch (\\\\d+)"
'''

def w(sub, name, data):
    p = ROOT / sub / name
    if isinstance(data, str):
        data = data.encode("utf-8")
    p.write_bytes(data)

rng = random.Random(7)
junk = bytes(rng.randrange(256) for _ in range(2048))
deep = 3000

# ---- sweep.toml variants
S = GOOD_SWEEP
w("sweep", "binary-junk.toml", junk)
w("sweep", "nul-byte.toml", S.replace('lr = [0.1, 0.2]', 'lr = [0.1, 0.2]\x00'))
w("sweep", "latin1.toml", S.replace('name = "hostile"', 'name = "caf\u00e9"').encode("latin-1"))
w("sweep", "empty.toml", "")
w("sweep", "deep-nesting.toml", S + '\n[fixed]\nlr = ' + '[' * deep + ']' * deep + '\n')
w("sweep", "nesting-100.toml", S.replace('lr = [0.1, 0.2]', 'lr = [' + '[' * 100 + '0.1' + ']' * 100 + ']'))
w("sweep", "huge-integer.toml", S.replace('lr = [0.1, 0.2]', 'lr = [' + '9' * 5000 + ']'))
w("sweep", "int-beyond-64-bit.toml", S.replace('lr = [0.1, 0.2]', 'lr = [18446744073709551616]'))
w("sweep", "name-command-substitution.toml", S.replace('name = "hostile"', 'name = "$(touch /tmp/hpc-sweep-pwned)"'))
w("sweep", "name-trailing-newline.toml", S.replace('name = "hostile"', 'name = "hostile\\n"'))
w("sweep", "name-line-separator.toml", S.replace('name = "hostile"', 'name = "host\\u2028ile\\r#SBATCH --exclusive"'))
w("sweep", "name-backticks.toml", S.replace('name = "hostile"', 'name = "`reboot`"'))
w("sweep", "command-attribute-access.toml", S.replace('command = "cat {config}"', 'command = "cat {config.__class__.__init__.__globals__}"'))
w("sweep", "command-positional-field.toml", S.replace('command = "cat {config}"', 'command = "cat {0} {config}"'))
w("sweep", "command-unbalanced-brace.toml", S.replace('command = "cat {config}"', 'command = "cat {config"'))
w("sweep", "base-outside-folder.toml", S.replace('base = "configs/.base_config.toml"', 'base = "../../../../../../etc/passwd"'))
w("sweep", "section-with-carriage-return.toml", S + '\n["gr\\rid"]\nlr = [1]\n')
w("sweep", "key-with-nul.toml", S.replace('lr = [0.1, 0.2]', '"lr\\u0000; rm -rf ~" = [0.1]'))
w("sweep", "unknown-key-shell.toml", S.replace('site = "local"', 'site = "local"\n"$(reboot)" = 1'))
w("sweep", "max-retries-infinite.toml", S.replace('site = "local"', 'site = "local"\nmax_retries = inf'))
w("sweep", "throttle-negative.toml", S.replace('site = "local"', 'site = "local"\nthrottle = -1'))
w("sweep", "walltime-negative.toml", S.replace('site = "local"', 'site = "local"\nwalltime = "-1:00:00"'))
w("sweep", "cpus-per-gpu-zero.toml", S.replace('site = "local"', 'site = "local"\ncpus_per_gpu = 0'))
w("sweep", "mem-per-gpu-shell.toml", S.replace('site = "local"', 'site = "local"\nmem_per_gpu = "16G; reboot"'))
w("sweep", "resume-states-shell.toml", S.replace('site = "local"', 'site = "local"\nresume_states = ["timeout; reboot"]'))
w("sweep", "grid-not-a-list.toml", S.replace('lr = [0.1, 0.2]', 'lr = 0.1'))
w("sweep", "grid-explosion.toml", S.replace('lr = [0.1, 0.2]', 'lr = [0.1, 0.2]\n' + "\n".join(
    f'"model.k{i}" = [' + ", ".join(str(j) for j in range(100)) + ']' for i in range(8))))
w("sweep", "random-count-huge.toml", S + '\n[random]\ncount = 1000000000000\nseed = 1\n[random.params]\nlr = { dist = "uniform", low = 0.1, high = 0.2 }\n')
w("sweep", "log-regex-invalid.toml", S.replace('epoch = "epoch (\\\\d+)"', 'epoch = "epoch (\\\\d+"'))
w("sweep", "device-newline.toml", S.replace('site = "local"', 'site = "local"\ndevice = "gpu*1\\n#SBATCH --exclusive"'))
w("sweep", "device-huge-count.toml", S.replace('site = "local"', 'site = "local"\ndevice = "gpu*99999999999999999999:0"'))

# ---- bases (used as configs/.base_config.<ext>)
w("base", "binary-junk.toml", junk)
w("base", "nul-byte.toml", "lr = 0.1\x00\n")
w("base", "control-junk-utf8.toml", "\x01\x02\x7f = ]]]\n")
w("base", "latin1.toml", 'lr = 0.1\nname = "caf\u00e9"\n'.encode("latin-1"))
w("base", "deep-nesting.toml", 'lr = 0.1\nx = ' + '[' * deep + ']' * deep + '\n')
w("base", "nesting-100.toml", 'lr = 0.1\n' + "".join(f'[{".".join("t" for _ in range(i + 1))}]\nk = 1\n' for i in range(100)))
w("base", "huge-integer.toml", 'lr = 0.1\nseed = ' + '9' * 5000 + '\n')
w("base", "int-beyond-64-bit.toml", 'lr = 0.1\n[model]\nseed = -9223372036854775809\n')
w("base", "binary-junk.yaml", junk)
w("base", "nul-byte.yaml", "lr: 0.1\nx: \x00\n")
w("base", "latin1.yaml", 'lr: 0.1\nname: caf\u00e9\n'.encode("latin-1"))
w("base", "deep-nesting.yaml", 'lr: 0.1\nx: ' + '[' * deep + ']' * deep + '\n')
w("base", "nesting-100.yaml", 'lr: 0.1\nx: ' + '{a: ' * 100 + '1' + '}' * 100 + '\n')
w("base", "huge-integer.yaml", 'lr: 0.1\nseed: ' + '9' * 5000 + '\n')
w("base", "int-beyond-64-bit.yaml", 'lr: 0.1\nmodel:\n  seed: 18446744073709551616\n')
bomb = ['lr: 0.1', 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
for i, (prev, cur) in enumerate(zip("abcdefgh", "bcdefghi")):
    bomb.append(f"{cur}: &{cur} [" + ", ".join(f"*{prev}" for _ in range(9)) + "]")
w("base", "alias-bomb.yaml", "\n".join(bomb) + "\n")
w("base", "python-object-tag.yaml", 'lr: 0.1\nx: !!python/object/apply:os.system ["touch /tmp/hpc-sweep-pwned"]\n')
w("base", "top-level-list.yaml", '- lr: 0.1\n- lr: 0.2\n')
w("base", "unclosed-quote.yaml", 'lr: 0.1\nname: "unterminated\n')

# ---- site profiles (site.toml beside sweep.toml)
P = 'scheduler = "slurm"\ngpu_request = "gres"\n'
w("site", "binary-junk.toml", junk)
w("site", "latin1.toml", (P + 'description = "caf\u00e9"\n').encode("latin-1"))
w("site", "malformed.toml", P + 'partition = "gpu\n')
w("site", "unknown-key.toml", P + 'partion = "gpu"\n')
w("site", "unknown-key-shell.toml", P + '"$(reboot)" = "x"\n')
w("site", "bad-type.toml", P + 'max_queued = "ten"\n')
w("site", "bool-for-int.toml", P + 'max_queued = true\n')
w("site", "zero-cap.toml", P + 'max_queued = 0\n')
w("site", "scheduler-unknown.toml", 'scheduler = "sge"\n')
w("site", "gpu-request-unknown.toml", P.replace('"gres"', '"magic"'))
w("site", "directive-newline.toml", P + 'extra_directives = ["#SBATCH --constraint=a100\\nrm -rf ~"]\n')
w("site", "directive-carriage-return.toml", P + 'extra_directives = ["#SBATCH --constraint=a100\\rtouch /tmp/hpc-sweep-pwned"]\n')
w("site", "directive-not-a-comment.toml", P + 'extra_directives = ["touch /tmp/hpc-sweep-pwned"]\n')
w("site", "setup-newline.toml", P + 'setup = ["module load cuda\\ntouch /tmp/hpc-sweep-pwned"]\n')
w("site", "setup-not-strings.toml", P + 'setup = [["module", "load"]]\n')
w("site", "partition-semicolon.toml", P + 'partition = "gpu;touch /tmp/hpc-sweep-pwned"\n')
w("site", "partition-command-substitution.toml", P + 'partition = "$(touch /tmp/hpc-sweep-pwned)"\n')
w("site", "account-trailing-newline.toml", P + 'account = "chem\\n"\n')
w("site", "qos-space.toml", P + 'qos = "normal --exclusive"\n')
w("site", "gpu-type-newline.toml", P + 'gpu_type = "a100\\n#SBATCH --exclusive"\n')
w("site", "gpu-resource-newline.toml", P + 'gpu_resource = { gpu = "gpu\\ntouch /tmp/hpc-sweep-pwned" }\n')
w("site", "gpu-resource-not-string.toml", P + 'gpu_resource = { gpu = 5 }\n')
w("site", "mem-shell.toml", P + 'mem_per_gpu = "16G`reboot`"\n')
w("site", "hostname-bad-regex.toml", P + 'hostname = "(login"\n')
w("site", "walltime-words.toml", P + 'walltime = "forever"\n')
w("site", "template-path-traversal.toml", P + 'template = "../../../../etc/passwd"\n')
w("site", "template-missing.toml", P + 'template = "mine.sh.j2"\n')
w("site", "cpus-negative.toml", P + 'cpus_per_gpu = -4\n')
w("site", "deep-nesting.toml", P + 'gpu_resource = { gpu = ' + '[' * deep + ']' * deep + ' }\n')
w("site", "huge-integer.toml", P + 'max_queued = ' + '9' * 5000 + '\n')
