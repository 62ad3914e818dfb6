-- Add a batch of results' sums to the models' calibration, decaying what was there.
-- KEYS: the calibration hash (fields `<model>:<n>`, the n-th sum; `<model>:count`, `<model>:busy`).
-- ARGV: half-life (results), the number of sums per model, which of them is busy seconds, then
--       per model: its name, the count of results, and that many sums (the first is the count again).
-- Guarantees: every sum of a model decays by the same factor 0.5^(count / half-life) before the
-- batch is added, in one step, so the sums always describe the same (weighted) set of results.
-- Statistics, not accounting: a batch applied twice after a crash counts twice.
local key = KEYS[1]
local half, width, busy = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
while i <= #ARGV do
  local model, n = ARGV[i], tonumber(ARGV[i + 1])
  local names = {}
  for j = 1, width do names[j] = model .. ':' .. j end
  local old = redis.call('HMGET', key, unpack(names))
  local keep = math.pow(0.5, n / half)
  local out = {}
  for j = 1, width do
    out[#out + 1] = names[j]
    out[#out + 1] = string.format('%.17g', (tonumber(old[j]) or 0) * keep + tonumber(ARGV[i + 1 + j]))
  end
  redis.call('HSET', key, unpack(out))
  -- every result measured, and their busy seconds, undecayed: the planner's utilization is measured on them
  redis.call('HINCRBY', key, model .. ':count', n)
  redis.call('HINCRBYFLOAT', key, model .. ':busy', ARGV[i + 1 + busy])
  i = i + 2 + width
end
return 1
