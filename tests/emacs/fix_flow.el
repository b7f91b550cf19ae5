;;; fix_flow.el --- Emacs + eglot drive ledex-lsp end to end, in batch mode  -*- lexical-binding: t -*-
;;
;; Opens the example project's buggy file with `eglot-ensure' (as docs/editors.md says),
;; waits for the ledex diagnostic, freezes the model process the server announces
;; (window/logMessage) so generation is deterministically still running, then: lists code
;; actions (no error, no dead "still looking" action: eglot 1.9 cannot show disabled ones),
;; asks for an explanation (eglot cannot window/showDocument: it must come as a message),
;; reads the hover (plaintext: eglot without markdown-mode asks for it).  Then it lets the
;; model go on, picks the preferred fix from eglot's own code-action menu, saves, and waits
;; until the diagnostic is cleared.  Writes a JSON report to $LEDEX_RESULT.
;;
;; Run:  LEDEX_ROOT=... LEDEX_FILE=... LEDEX_PYTHON=... LEDEX_OPTIONS='{}' LEDEX_RESULT=out.json \
;;       emacs --batch -q -l tests/emacs/fix_flow.el
;; Waits run Emacs's event loop (`accept-process-output') until a condition holds; the
;; timeout only bounds a hung server.

(require 'eglot)                        ; -q, not -Q: Debian's site-start makes elpa-eglot loadable
(require 'json)
(require 'cl-lib)

(defvar ledex-result (list (cons 'steps nil)))
(defvar ledex-timeout 300)  ; each wait; the test gives the whole script 420 s, pytest 600 s
(defvar ledex-published (make-hash-table :test 'equal)) ; uri -> last diagnostics (plists)
(defvar ledex-shown nil)                                 ; window/showMessage texts
(defvar ledex-logged nil)                                ; window/logMessage texts

(defun ledex-put (key value) (setf (alist-get key ledex-result) value))
(defun ledex-step (name) (ledex-put 'steps (append (alist-get 'steps ledex-result) (list name))))

(defun ledex-finish (ok &optional error)
  (ledex-put 'ok (if ok t :json-false))
  (ledex-put 'error error)
  (with-temp-file (getenv "LEDEX_RESULT") (insert (json-encode ledex-result)))
  (ignore-errors (eglot-shutdown (eglot-current-server)))
  (kill-emacs (if ok 0 1)))

(defun ledex-wait (what predicate)
  "Run the event loop until PREDICATE holds; fail with WHAT after `ledex-timeout' seconds."
  (let ((deadline (+ (float-time) ledex-timeout)))
    (while (not (funcall predicate))
      (when (> (float-time) deadline) (ledex-finish nil (format "timed out waiting for %s" what)))
      (accept-process-output nil 0.05))))

;; Record what the server sends, then let eglot handle it as usual.
(cl-defmethod eglot-handle-notification :before
  (_server (_method (eql textDocument/publishDiagnostics)) &key uri diagnostics &allow-other-keys)
  (puthash uri diagnostics ledex-published))
(cl-defmethod eglot-handle-notification :before
  (_server (_method (eql window/showMessage)) &key message &allow-other-keys)
  (push message ledex-shown))
(cl-defmethod eglot-handle-notification :before
  (_server (_method (eql window/logMessage)) &key message &allow-other-keys)
  (push message ledex-logged))

(let* ((root (file-name-as-directory (getenv "LEDEX_ROOT")))
       (file (getenv "LEDEX_FILE"))
       (options (let ((json-object-type 'plist) (json-false :json-false))
                  (json-read-from-string (getenv "LEDEX_OPTIONS")))))
  ;; The project is a plain folder (no VCS): tell project.el where its root is.
  (add-hook 'project-find-functions (lambda (_dir) (cons 'transient root)))
  (setq eglot-server-programs
        `((python-mode . (,(getenv "LEDEX_PYTHON") "-m" "ledex.server" :initializationOptions ,options))))
  (add-hook 'python-mode-hook #'eglot-ensure)
  (find-file file)
  (run-hooks 'post-command-hook)          ; eglot-ensure connects after the command that opened the file
  (ledex-wait "eglot to connect" #'eglot-current-server)
  (ledex-step "opened"))

(defvar ledex-uri (eglot--path-to-uri (getenv "LEDEX_FILE")))
(defvar ledex-server (eglot-current-server))

(defun ledex-diagnostic (&optional pred)
  (cl-find-if (lambda (d) (and (equal (plist-get d :source) "ledex") (or (null pred) (funcall pred d))))
              (gethash ledex-uri ledex-published)))

(defun ledex-model-pid ()
  (cl-some (lambda (m) (and (string-match "model process \\([0-9]+\\) serves" m)
                            (string-to-number (match-string 1 m))))
           ledex-logged))

;; 1. The diagnostic arrives; the model process is frozen while it works on the fix.
(ledex-wait "the model process" #'ledex-model-pid)
(signal-process (ledex-model-pid) 'SIGSTOP)
(ledex-wait "a ledex diagnostic" #'ledex-diagnostic)
(ledex-put 'pending_message (plist-get (ledex-diagnostic) :message))
(ledex-step "diagnostic")

(defun ledex-line-of (diagnostic)
  (plist-get (plist-get (plist-get diagnostic :range) :start) :line))

(defun ledex-goto (diagnostic)
  (goto-char (point-min))
  (forward-line (ledex-line-of diagnostic)))

(defun ledex-actions-here ()
  "What eglot's code-action menu would list at point (same request as M-x eglot-code-actions)."
  (eglot-code-actions (line-beginning-position) (line-end-position)))

;; 2. While generating: code actions, explain, hover.
(ledex-goto (ledex-diagnostic))
(let ((actions (ledex-actions-here)))
  (ledex-put 'pending_actions (mapcar (lambda (a) (plist-get a :title)) actions))
  (ledex-put 'dead_actions (cl-count-if (lambda (a) (not (or (plist-get a :edit) (plist-get a :command)))) actions)))
(let* ((test (plist-get (plist-get (ledex-diagnostic) :data) :test))
       (reply (eglot-execute-command ledex-server 'ledex.explain (vector test))))
  (ledex-put 'explain_shown (plist-get reply :shown))
  (ledex-put 'explain_message (car ledex-shown)))
(let ((hover (jsonrpc-request ledex-server :textDocument/hover (eglot--TextDocumentPositionParams))))
  (ledex-put 'hover_kind (plist-get (plist-get hover :contents) :kind))
  (ledex-put 'hover (plist-get (plist-get hover :contents) :value)))
(ledex-step "pending")

;; 3. The model goes on; the fix is verified; pick it from eglot's menu as a user would.
(signal-process (ledex-model-pid) 'SIGCONT)
(defun ledex-ready ()
  (ledex-diagnostic (lambda (d) (let ((data (plist-get d :data)))
                                  (and (equal (plist-get data :state) "ready") (> (plist-get data :verified) 0))))))
(ledex-wait "a verified fix" #'ledex-ready)
(ledex-put 'ready_message (plist-get (ledex-ready) :message))
(ledex-goto (ledex-ready))
(let* ((actions (ledex-actions-here))
       (preferred (cl-find-if (lambda (a) (eq (plist-get a :isPreferred) t)) actions)))
  (ledex-put 'actions (mapcar (lambda (a) (plist-get a :title)) actions))
  (unless preferred (ledex-finish nil "no preferred fix among the code actions"))
  (ledex-step "actions")
  ;; eglot's own menu code: applies the edit, then runs the action's command (ledex.applyFix).
  (cl-letf (((symbol-function 'completing-read) (lambda (&rest _) (plist-get preferred :title))))
    (let ((last-nonmenu-event ?\r))     ; a keyboard "event": eglot asks with completing-read, not a popup
      (eglot--read-execute-code-action actions ledex-server)))
  (ledex-put 'applied (plist-get preferred :title))
  (ledex-step "applied"))

(save-buffer)
(ledex-step "saved")
(ledex-wait "the diagnostic to clear" (lambda () (null (ledex-diagnostic))))
(ledex-step "cleared")
(ledex-put 'shown (reverse ledex-shown))
(ledex-finish t)
