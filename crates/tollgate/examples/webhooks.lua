-- wrk script for bench_redis: sends pre-signed Stripe events, read from the file named after
-- `--` (one `signature<TAB>body` per line), each once in order, then from the start again.
local requests = {}
local next_request = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local signature, body = line:match("^([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "/api/stripe-webhook",
      { ["Stripe-Signature"] = signature, ["Content-Type"] = "application/json" }, body)
  end
  file:close()
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
