-- holdings.lua: One account's holdings in one round trip. KEYS: accounts hash, cash hash.
-- ARGV: prefix, account id, lowest and highest date ordinal of the trade window.
-- Returns {account JSON, cash, lots JSON, trade JSON...} with the trades of the account and
-- of every account in its ``linked_account_ids``; {nil} when the account does not exist.
local prefix, id, low, high = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local account = redis.call('HGET', KEYS[1], id)
if not account then return {false} end
local out = {account, redis.call('HGET', KEYS[2], id), redis.call('GET', prefix .. 'lots:' .. id)}
local members = {id}
local ok, parsed = pcall(cjson.decode, account)
if ok and type(parsed) == 'table' and type(parsed.linked_account_ids) == 'table' then
  for _, other in ipairs(parsed.linked_account_ids) do table.insert(members, other) end
end
for _, member in ipairs(members) do
  for _, trade in ipairs(redis.call('ZRANGEBYSCORE', prefix .. 'trades:' .. member, low, high)) do
    table.insert(out, trade)
  end
end
return out
