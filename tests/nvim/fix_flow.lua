-- Headless Neovim (0.7+) drives ledex-lsp with its built-in LSP client:
-- open the example project's buggy file, wait for the ledex diagnostic, request code
-- actions, apply the preferred fix (edit + its command, as an editor does), save, and wait
-- until the tests pass (the diagnostic is cleared). Writes a JSON report to $LEDEX_RESULT.
--
-- Run:  LEDEX_ROOT=... LEDEX_FILE=... LEDEX_PYTHON=... LEDEX_OPTIONS='{}' LEDEX_RESULT=out.json \
--       nvim --headless -u NONE -c "luafile tests/nvim/fix_flow.lua"
-- vim.wait() runs the event loop until a condition holds (it processes notifications as
-- they arrive); the timeout only bounds a hung server.

local result = { steps = {} }
local TIMEOUT_MS = 300000  -- each wait; the test gives the whole script 420 s, pytest 600 s

local function finish(ok, err)
  result.ok, result.error = ok, err
  local handle = io.open(os.getenv("LEDEX_RESULT"), "w")
  handle:write(vim.fn.json_encode(result))
  handle:close()
  vim.cmd(ok and "qall!" or "cquit! 1")
end

local function step(name) table.insert(result.steps, name) end

local file = os.getenv("LEDEX_FILE")
local uri = vim.uri_from_fname(file)
local latest = {}  -- uri -> last published LSP diagnostics (raw tables)

local client_id = vim.lsp.start_client({
  name = "ledex",
  cmd = { os.getenv("LEDEX_PYTHON"), "-m", "ledex.server" },
  root_dir = os.getenv("LEDEX_ROOT"),
  init_options = vim.fn.json_decode(os.getenv("LEDEX_OPTIONS")),
  handlers = {
    ["textDocument/publishDiagnostics"] = function(err, params, ctx, config)
      latest[params.uri] = params.diagnostics
      return vim.lsp.diagnostic.on_publish_diagnostics(err, params, ctx, config)
    end,
    ["window/showMessage"] = function(_, params)
      result.messages = result.messages or {}
      table.insert(result.messages, params.message)
    end,
  },
})
if not client_id then return finish(false, "the language server did not start") end

vim.cmd("edit " .. vim.fn.fnameescape(file))
vim.lsp.buf_attach_client(0, client_id)
step("opened")

local function ready_diagnostic()
  for _, d in ipairs(latest[uri] or {}) do
    if d.source == "ledex" and d.data and d.data.state == "ready" and (d.data.verified or 0) > 0 then return d end
  end
end

if not vim.wait(TIMEOUT_MS, function() return ready_diagnostic() ~= nil end, 50) then
  return finish(false, "no ledex diagnostic with a verified fix arrived")
end
local diagnostic = ready_diagnostic()
result.diagnostic = diagnostic.message
step("diagnostic")

local params = {
  textDocument = { uri = uri },
  range = diagnostic.range,
  context = { diagnostics = { diagnostic } },
}
local responses = vim.lsp.buf_request_sync(0, "textDocument/codeAction", params, TIMEOUT_MS)
local actions = (responses and responses[client_id] and responses[client_id].result) or {}
result.actions = {}
local chosen
for _, action in ipairs(actions) do
  table.insert(result.actions, action.title)
  if action.isPreferred then chosen = action end
end
if not chosen then return finish(false, "no preferred fix among the code actions") end
step("actions")

local client = vim.lsp.get_client_by_id(client_id)
vim.lsp.util.apply_workspace_edit(chosen.edit, client.offset_encoding or "utf-16")
local reply = client.request_sync("workspace/executeCommand",
  { command = chosen.command.command, arguments = chosen.command.arguments }, TIMEOUT_MS, 0)
result.applied = chosen.title
result.command_result = reply and reply.result
step("applied")

vim.cmd("write")
step("saved")

local function cleared()
  for _, d in ipairs(latest[uri] or {}) do
    if d.source == "ledex" then return false end
  end
  return true
end
if not vim.wait(TIMEOUT_MS, cleared, 50) then return finish(false, "the diagnostic did not clear after saving the fix") end
step("cleared")

client.stop()
finish(true, nil)
