import os
"""Q4 supplement: bits/row and table bytes at equal Delta for the table groupings (best config)."""
import json, codec, study
out = []
for a in (0.16, 0.78):
    for G in (4, 8, 16, 32, 64, None):
        r = codec.run(a, score=False, **{**study.BEST, 'G': G})
        out.append(dict(a=a, G=G, ntab=r['ntab'], info_bits_row=r['info_B'] * 8, row_mean=r['row_mean'], table_B=r['table_B'], total_B=r['total_B']))
        print(out[-1], flush=True)
json.dump(out, open(os.path.join(codec.HERE, 'q4bits.json'), 'w'), indent=1)
